"""One row per run, every column a plain value: `analysis.load_sweep(dir)` and `python -m analysis runs`.

The tables and the report show display strings ("✓ 2/3", "16%"); this is the same sweep as data,
for pandas, a notebook or a CSV. The runs are those analysis.collate counts (complete, valid, each
run once by its identity); a folder left out is one line in `df.attrs["skipped"]`.

Columns, in this order (a name found twice keeps its first meaning):
- what collate reads of every run: `run` (its folder), `task`, `op` (canonical), `op_pretty`,
  `p`, `frac`, `seed`, `model`, `optimizer`, `verdict`, `phase`, `onset_step`,
  `memorisation_step`, `grok_step`, `best_test_acc`, `final_test_acc`, ...;
- the rest of the summary (`final_train_loss`, `n_params`, a mixture's `per_op.<op>.verdict`, ...);
- the config, flattened to dotted keys (`optimizer.lr`, `model.d_model`, `train.steps`); its
  top-level `op`, `p`, `frac`, `seed` are the columns above;
- the measures of the last eval in metrics.jsonl, where recorded, as `end.<measure>`
  (`end.gini_embed`, `end.weight_sq_total`).

A column of whole numbers is Int64 (empty where a run has none, e.g. `grok_step`), of other
numbers float64, of true/false `boolean`, of names a string; a list (`optimizer.betas`) is its
JSON text. A run whose summary predates the phases gets its phase read again from its
metrics.jsonl, as `python -m analysis phases` does (analysis.phases.run_phase).
"""

import json
import math
from pathlib import Path

import pandas as pd

from grok.record.files import SUMMARY, is_number

from .collate import flatten, run_rows

FIRST = ["run", "sweep_id", "task", "task_desc", "op", "op_pretty", "p", "frac", "seed", "model",
         "optimizer", "verdict", "phase", "onset_step", "memorisation_step", "grok_step", "grok_delay",
         "best_test_acc", "best_test_step", "final_train_acc", "final_test_acc", "final_train_loss",
         "final_test_loss", "steps", "wall_time_s", "n_train", "n_test"]
# Numbers even where no run has one (no run grokked: every grok_step empty).
NUMERIC = {"p", "frac", "seed", "onset_step", "memorisation_step", "grok_step", "grok_delay",
           "best_test_acc", "best_test_step", "final_train_acc", "final_test_acc", "final_train_loss",
           "final_test_loss", "steps", "wall_time_s", "n_train", "n_test", "resumed_from"}
CURVES = ("step", "train_acc", "test_acc", "train_loss", "test_loss", "lr")  # in the summary already


def load_sweep(*dirs) -> pd.DataFrame:
    """Every complete run under `dirs` (sweep or run folders), one row each, numeric columns as
    numbers (module docstring). Folders left out, and why: `df.attrs["skipped"]`."""
    runs, problems = run_rows(*dirs)
    rows = [_row(run) for run in runs]
    frame = pd.DataFrame(rows, columns=_columns(rows), dtype=object)  # no int made a float yet
    frame = frame.apply(lambda col: _typed(col, numeric=col.name in NUMERIC))
    frame.attrs["skipped"] = problems
    return frame


def _row(run: dict) -> dict:
    """collate's row, then the summary's other keys, the config, the last eval's measures."""
    folder = Path(run["run"])
    row = {k: v for k, v in run.items() if k != "config"}
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        summary = {}
    row.update(_phase(folder, run["config"], summary))
    for key, value in flatten({k: v for k, v in summary.items() if k != "status"}).items():
        row.setdefault(key, value)
    for key, value in run["config"].items():
        row.setdefault(key, value)
    for key, value in _end_measures(folder).items():
        row.setdefault(f"end.{key}", value)
    return row


def _phase(folder: Path, config: dict, summary: dict) -> dict:
    """The run's phase and onset step: its summary's, else read again from its curves; none
    where neither can be read."""
    from .phases import run_phase

    try:
        got, _ = run_phase(folder, config)
        return {"phase": got.get("phase"), "onset_step": got.get("onset_step")}
    except Exception:  # noqa: BLE001 - a torn metrics.jsonl: the row stays, without a phase
        return {"phase": summary.get("phase"), "onset_step": summary.get("onset_step")}


def _end_measures(folder: Path) -> dict:
    """The numbers of the last eval of metrics.jsonl, less the curves the summary holds."""
    from grok.figures import BadRecord, read_metrics

    try:
        m = read_metrics(folder / "metrics.jsonl")
    except BadRecord:
        return {}
    last = m.iloc[-1]
    return {k: v for k, v in last.items() if k not in CURVES and is_number(v)}


def _columns(rows: list[dict]) -> list[str]:
    """FIRST, then every other key in the order the rows first name it."""
    names = dict.fromkeys(FIRST)
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _typed(col: pd.Series, numeric: bool = False) -> pd.Series:
    """A column as one dtype: Int64, float64, boolean, or text (a list as its JSON); `numeric`:
    float64 where every value is missing."""
    present = [v for v in col if not _missing(v)]
    if not present and numeric:
        return pd.Series(math.nan, index=col.index, dtype=float)
    if present and all(isinstance(v, bool) for v in present):
        return col.map(lambda v: pd.NA if _missing(v) else v).astype("boolean")
    if present and all(is_number(v) for v in present):
        if all(float(v).is_integer() and not isinstance(v, float) for v in present):
            return col.map(lambda v: pd.NA if _missing(v) else int(v)).astype("Int64")
        return pd.to_numeric(col.map(lambda v: math.nan if _missing(v) else v), errors="coerce").astype(float)
    if all(isinstance(v, str) for v in present):
        return col.map(lambda v: None if _missing(v) else v).astype(object)
    return col.map(lambda v: None if _missing(v) else
                   json.dumps(list(v) if isinstance(v, tuple) else v) if isinstance(v, (list, tuple, dict))
                   else str(v)).astype(object)


PREVIEW = ["op_pretty", "p", "frac", "seed", "verdict", "phase", "grok_step", "best_test_acc"]


def preview(frame: pd.DataFrame, n: int = 10) -> str:
    """A few columns of the first `n` runs, for the terminal."""
    from tabulate import tabulate

    shown = frame[[c for c in PREVIEW if c in frame]].head(n)
    shown = shown.astype(object).where(shown.notna(), None)
    text = tabulate(shown, headers="keys", tablefmt="github", showindex=False, missingval="-",
                    floatfmt=".3g")
    more = f"\n... and {len(frame) - n} more" if len(frame) > n else ""
    return f"{len(frame)} run(s), {frame.shape[1]} column(s)\n\n{text}{more}"
