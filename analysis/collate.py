"""Sweeps -> one tidy DataFrame, a row per run, from local records or from a W&B group.

A run folder is one with a `config.yaml` and a `summary.json` (see grok.record.local). Folders that are
half-written, corrupt, failed or not a whole run are reported by path and why, and left out; they
never stop the table. A run counts only when its record names its task, seed, model and optimizer
(from its summary, else its config), for a modular task also a valid op, p and frac, and its
summary a verdict and best test accuracy. Other tasks (grok/tasks: digits_add, sort, ...) carry no
op or p; `frac` only where the task splits a finite set by it (their summary says so).
Each row keeps its whole config, flattened (`config`), so tables pool only runs whose configs
differ in the seed alone (analysis.pooling).

A run counts once, wherever it is found: a folder named twice (`grid S S/<job>`) is read once, and
copies of one run (two copies of a sweep under one folder; `op=x+y` and `op=y+x`, one op in two
folders) are one run by its identity (grok.record.identity.run_key): the copy with the most
steps counts, the others are `same run as <folder>`.
"""

import json
import math
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from grok.config import TASKS
from grok.ops import OpError, parse_op
from grok.record.files import CONFIG, SUMMARY, is_number, number
from grok.record.identity import run_key
from grok.record.status import continuation
from grok.verdict import GROKKED, NO_DELAY, NOT_GENERALISED
from grok.wandb_view import record_name

COLUMNS = ["sweep_id", "task", "task_desc", "op", "op_pretty", "p", "frac", "seed", "model", "optimizer",
           "verdict", "memorisation_step", "grok_step", "grok_delay", "best_test_acc",
           "final_test_acc", "steps", "wall_time_s", "n_train", "run", "config"]
REQUIRED = ["task", "seed", "model", "optimizer", "verdict", "best_test_acc"]
MODULAR_REQUIRED = ["op", "p", "frac"]
NUMBERS = ["memorisation_step", "grok_step", "grok_delay", "best_test_acc", "final_test_acc", "steps",
           "wall_time_s"]
VERDICTS = (GROKKED, NO_DELAY, NOT_GENERALISED)


def is_modular(task) -> bool:
    """A modular-arithmetic task (an op mod p), as opposed to grok/tasks' other tasks."""
    return task in TASKS


def flatten(config, prefix: str = "") -> dict:
    """A nested config as {"dotted.key": value}; lists become tuples (hashable, comparable)."""
    if not isinstance(config, dict):
        return {prefix: tuple(config) if isinstance(config, list) else config} if prefix else {}
    out = {}
    for k, v in config.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _row(summary: dict, config: dict, where: str) -> dict:
    row = {k: number(summary.get(k)) for k in COLUMNS}
    # Older or foreign summaries may lack the run keys: fall back on the resolved config.
    for key in ("task", "model", "optimizer"):
        group = config.get(key)
        row[key] = row[key] or (group.get("name") if isinstance(group, dict) else None)
    if row["task"] is None and (row["op"] is not None or config.get("op") is not None):
        row["task"] = "poly"  # a record from before the other tasks: modular, named by its op
    # op, p and frac mean something for modular tasks only (other tasks' configs still hold the
    # defaults, unused); their summaries hold frac where the task splits a finite set by it.
    fallback = ("op", "p", "frac", "seed", "sweep_id") if is_modular(row["task"]) else ("seed", "sweep_id")
    for key in fallback:
        row[key] = config.get(key) if row[key] is None else row[key]
    if row["op_pretty"] is None and isinstance(summary.get("mixture"), str):
        row["op_pretty"] = summary["mixture"]  # a mixture of ops: "{x+y, x*y}" on the op axis
    row["run"] = where
    row["config"] = flatten(config)
    return row


def check_row(row: dict) -> str | None:
    """Why this row is no run to count (one line), or None; a good row is normalised in place:
    op canonical (and its pretty form), p and seed ints, frac a float."""
    modular = is_modular(row.get("task"))
    missing = [k for k in REQUIRED + (MODULAR_REQUIRED if modular else []) if row.get(k) is None]
    if missing:
        return f"incomplete summary (no {', '.join(missing)})"
    if not isinstance(row["task"], str):
        return f"bad task {row['task']!r} (a name expected)"
    why = _check_modular(row) if modular else _check_frac(row, optional=True)
    if why:
        return why
    seed = row["seed"]
    if not is_number(seed) or not math.isfinite(seed) or seed != int(seed):
        return f"bad seed {seed!r} (an integer expected)"
    row["seed"] = int(seed)
    for key in ("model", "optimizer"):
        if not isinstance(row[key], str):
            return f"bad {key} {row[key]!r} (a name expected)"
    if row["verdict"] not in VERDICTS:
        return f"bad verdict {row['verdict']!r} (one of: {', '.join(VERDICTS)})"
    for key in NUMBERS:
        if row.get(key) is not None and not is_number(row[key]):
            return f"bad {key} {row[key]!r} (a number expected)"
    if not 0 <= row["best_test_acc"] <= 1:
        return f"bad best_test_acc {row['best_test_acc']!r} (between 0 and 1 expected)"
    return None


def _check_modular(row: dict) -> str | None:
    p = row["p"]
    if not is_number(p) or not math.isfinite(p) or p != int(p) or p < 2:
        return f"bad p {p!r} (an integer >= 2 expected)"
    row["p"] = int(p)
    try:
        op = parse_op(str(row["op"]))
        op.check_p(row["p"])
    except OpError as e:
        return f"bad op {row['op']!r} ({' '.join(str(e).split())})"
    row["op"], row["op_pretty"] = op.canonical, op.pretty
    return _check_frac(row)


def _check_frac(row: dict, optional: bool = False) -> str | None:
    frac = row["frac"]
    if frac is None and optional:
        return None
    if not is_number(frac) or not 0 < frac < 1:
        return f"bad frac {frac!r} (a number between 0 and 1 expected)"
    row["frac"] = float(frac)
    return None


# W&B's own folders inside a run folder (wandb/run-<time>-<id>/files/config.yaml, latest-run):
# copies of the run's config, no run of their own.
WANDB_RUN = re.compile(r"(offline-)?run-.*|latest-run")


def not_a_run(path: Path, root: Path) -> bool:
    """Is this config.yaml or summary.json a copy that Hydra (.hydra/) or W&B (wandb/run-*/)
    keeps inside a run folder? Only the part below `root` counts: a sweep kept under a folder
    named `wandb` or `.hydra` is read like any other."""
    parts = path.relative_to(root).parts[:-1]
    return ".hydra" in parts or any(a == "wandb" and WANDB_RUN.fullmatch(b) for a, b in zip(parts, parts[1:]))


def run_folders(root) -> list[Path]:
    """Every folder under `root` (itself included) that holds a run record or tried to."""
    root = Path(root)
    found = {p.parent for name in (CONFIG, SUMMARY) for p in root.rglob(name) if not not_a_run(p, root)}
    return sorted(found)


def read_records(*roots, distinct: bool = True) -> tuple[list[dict], list[str]]:
    """(records, problems): each complete run under `roots` as {"run", "summary", "config"}, and
    one line per folder left out. A folder found twice is read once; `distinct`: also copies
    of one run (`run_key`) are one record, the one with the most steps (`same run as`)."""
    records, problems, seen = [], [], set()
    for root in roots:
        if not Path(root).is_dir():
            problems.append(f"{root}: not a folder")
            continue
        for folder in run_folders(root):
            if folder.resolve() in seen:  # `grid S S/<job>`: the same folder, not a copy
                continue
            seen.add(folder.resolve())
            try:
                summary = json.loads((folder / SUMMARY).read_text())
                config = yaml.safe_load((folder / CONFIG).read_text())
            except FileNotFoundError as e:
                problems.append(f"{folder}: missing {Path(e.filename).name} (unfinished?)")
                continue
            except Exception as e:  # noqa: BLE001 - a corrupt record is skipped, not fatal
                problems.append(f"{folder}: unreadable ({type(e).__name__}: {e})")
                continue
            if not isinstance(summary, dict) or not isinstance(config, dict):
                problems.append(f"{folder}: unreadable record (not a mapping)")
            elif summary.get("status") != "complete":
                problems.append(f"{folder}: run not complete ({summary.get('error', summary.get('status'))})")
            elif why := continuation(folder, summary, config):  # its summary is an earlier budget's
                problems.append(f"{folder}: run not complete ({why})")
            else:
                records.append({"run": str(folder), "summary": summary, "config": config})
    return (once(records, problems) if distinct else records), problems


def once(records: list[dict], problems: list[str]) -> list[dict]:
    """Each run once (`run_key` of its config): of copies, the one with the most steps (the
    first found where they tie); one `same run as` line in `problems` for each other copy."""
    best: dict[str, dict] = {}
    for rec in records:
        try:
            key = run_key(_identity(rec))
        except Exception:  # noqa: BLE001 - a config too odd to key: counted (or refused) on its own
            key = f"folder:{rec['run']}"
        kept = best.get(key)
        if kept is None:
            best[key] = rec
        elif _steps(rec) > _steps(kept):
            problems.append(f"{kept['run']}: same run as {rec['run']} (which has more steps)")
            best[key] = rec
        else:
            problems.append(f"{rec['run']}: same run as {kept['run']}")
    kept = {id(rec) for rec in best.values()}
    return [rec for rec in records if id(rec) in kept]


def _identity(record: dict) -> dict:
    """The config a run's identity is read from: its config.yaml, and where that lacks a key that
    says which run it is (a hand-made or foreign record), the summary's value of it."""
    config, summary = dict(record["config"]), record["summary"]
    for key in ("task", "op", "p", "frac", "seed", "model", "optimizer", "mixture"):
        if key not in config and key in summary:
            config[key] = summary[key]
    return config


def _steps(record: dict) -> float:
    steps = number(record["summary"].get("steps"))
    return steps if is_number(steps) and math.isfinite(steps) else -1


def model_name(config: dict) -> str | None:
    m = config.get("model")
    return m.get("name") if isinstance(m, dict) else None


def cell_keys(summary: dict, config: dict) -> dict:
    """p, model, frac and seed of a run, from its summary, else its config (what the mixture and
    transfer tables group by)."""
    return {"p": summary.get("p", config.get("p")), "model": summary.get("model") or model_name(config),
            "frac": summary.get("frac", config.get("frac")), "seed": summary.get("seed", config.get("seed"))}


def load_runs(*roots, distinct: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """(runs, problems): one row per complete run under any of `roots`, and one line per folder
    that was skipped, naming its path and why. `distinct`: each run once (`once`, among the
    copies that make a row); else one row per folder (plots draw each copy)."""
    rows, problems = run_rows(*roots, distinct=distinct)
    return pd.DataFrame(rows, columns=COLUMNS), problems


def run_rows(*roots, distinct: bool = True) -> tuple[list[dict], list[str]]:
    """load_runs' rows as dicts, each value as its record has it (an int stays an int where a
    DataFrame column with a gap would make it a float)."""
    records, problems = read_records(*roots, distinct=False)
    good = []
    for rec in records:
        try:
            row = _row(rec["summary"], rec["config"], rec["run"])
        except Exception as e:  # noqa: BLE001 - any corrupt record is skipped, not fatal
            problems.append(f"{rec['run']}: unreadable ({type(e).__name__}: {e})")
            continue
        why = check_row(row)
        if why:
            problems.append(f"{rec['run']}: {why}")
        else:
            good.append((rec, row))
    return (distinct_rows(good, problems) if distinct else [row for _, row in good]), problems


def distinct_rows(good: list[tuple[dict, dict]], problems: list[str]) -> list[dict]:
    """The rows of (record, row) pairs, each run once (`once` of the records)."""
    kept = {id(rec) for rec in once([rec for rec, _ in good], problems)}
    return [row for rec, row in good if id(rec) in kept]


def from_wandb(path: str, group: str | None = None, api=None, problems: list | None = None) -> pd.DataFrame:
    """The same schema from a W&B project ("entity/project"), one group (sweep) or all.
    Needs the network and an API key; offline runs are read from their folders instead.
    Runs that are no complete run are left out, and each run is counted once (`once`: two W&B
    runs of one run, as a re-run or a second sync makes, are one); with `problems`, one line
    each is added there. Summary keys are read by the record's names: logged under W&B sections
    (`test/best_acc`) or before them (`best_test_acc`), grok.wandb_view.record_name."""
    problems = [] if problems is None else problems
    if api is None:
        import wandb

        api = wandb.Api()
    runs = api.runs(path, filters={"group": group} if group else None)
    good = []
    for r in runs:
        where = f"wandb:{path}/{r.id}"
        summary = {record_name(k): v for k, v in dict(r.summary).items()}
        if summary.get("status", "complete") != "complete" or "verdict" not in summary:
            why = summary.get("error") or summary.get("status") or "no verdict"
            problems.append(f"{where}: run not complete ({why})")
            continue
        rec = {"run": where, "summary": summary,
               "config": {k: v for k, v in r.config.items() if not k.startswith("_")}}
        row = _row(rec["summary"], rec["config"], where)
        why = check_row(row)
        if why:
            problems.append(f"{where}: {why}")
            continue
        good.append((rec, row))
    return pd.DataFrame(distinct_rows(good, problems), columns=COLUMNS)


def latest_sweep(outputs="outputs") -> Path | None:
    """The sweep launched last (`launched`); else the single-runs folder; else None. Not the
    folder last written: analysing a sweep writes its analysis/ folder."""
    sweeps = [p for p in Path(outputs, "sweeps").glob("*") if p.is_dir()]
    if sweeps:
        return max(sweeps, key=launched)
    runs = Path(outputs, "runs")
    return runs if runs.is_dir() else None


LAUNCH_ID = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(-\d{6})?")  # the default sweep_id


def launched(sweep: Path) -> tuple[float, str]:
    """When a sweep was last launched: its multirun.yaml's time (the grok sweeper writes it at
    each launch), else the time its default id names, else the newest run record's time."""
    multirun = sweep / "multirun.yaml"
    if multirun.is_file():
        return multirun.stat().st_mtime, sweep.name
    if LAUNCH_ID.fullmatch(sweep.name):
        fmt = "%Y-%m-%d_%H-%M-%S-%f" if sweep.name.count("-") == 5 else "%Y-%m-%d_%H-%M-%S"
        return datetime.strptime(sweep.name, fmt).timestamp(), sweep.name
    times = [p.stat().st_mtime for name in (CONFIG, SUMMARY) for p in sweep.rglob(name)
             if "analysis" not in p.relative_to(sweep).parts]
    return max(times, default=0.0), sweep.name
