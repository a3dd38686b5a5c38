"""Phase diagrams: the phase each run ended in (grok.verdict.PHASES), over any two config axes,
each cell coloured by the phase of most of its seeds and naming how many seeds ended in each.

A run's phase and onset step are its summary's. A run recorded before the phases existed (no
`phase` in its summary) is read again from its metrics.jsonl, as JSON data, by the same pure
function (grok.verdict.phase), with its config's threshold and delay ratio and today's defaults
for the keys it lacks; the criterion of those runs is today's default too (`held` was the only
one then, not a choice). Its config in the frame then says so, so it pools with new runs read
the same way and apart from runs read another way (analysis.pooling).
"""

import html
import json
import math
from pathlib import Path

import pandas as pd

from grok.figures import BadRecord, read_metrics
from grok.record.files import SUMMARY, is_number
from grok.verdict import (
    COMPREHENSION,
    CONFUSION,
    CRITERIA,
    DELAY_RATIO,
    GROKKING,
    HELD_MEDIAN,
    MEMORISATION,
    ONSET,
    PHASES,
    SEMI_GROKKING,
    THRESHOLD,
    UNGROKKING,
    WINDOW,
    phase,
)

from .pooling import pools
from .tables import grid

COLOURS = {COMPREHENSION: "#1a9850", GROKKING: "#91cf60", SEMI_GROKKING: "#fee08b",
           UNGROKKING: "#fc8d59", MEMORISATION: "#d73027", CONFUSION: "#bababa"}
LEGEND = ("phase of most seeds (ties: the first of " + ", ".join(PHASES) + "); "
          "in the cell: seeds per phase out of the cell's seeds")


def reading(config: dict) -> dict:
    """The verdict's parameters a run's config (flattened: `grok.threshold`) gives, today's
    defaults where it has none. A config without `grok.window` was written before the phases,
    when `held` was the only criterion: it is read with today's default criterion."""
    def get(key, default):
        v = config.get(f"grok.{key}", default) if isinstance(config, dict) else default
        if key != "criterion" and (not is_number(v) or not math.isfinite(v)):
            raise ValueError(f"bad grok.{key} {v!r} in its config (a number expected)")
        return v

    got = {"threshold": get("threshold", THRESHOLD), "delay_ratio": get("delay_ratio", DELAY_RATIO),
           "onset": get("onset", ONSET), "window": get("window", WINDOW), "criterion": HELD_MEDIAN}
    if isinstance(config, dict) and "grok.window" in config:
        got["criterion"] = get("criterion", HELD_MEDIAN)
    if got["criterion"] not in CRITERIA:
        raise ValueError(f"bad grok.criterion {got['criterion']!r} in its config")
    return got


def curve(run_dir) -> list[dict]:
    """The eval rows of a run's metrics.jsonl with finite step, train and test accuracy."""
    m = read_metrics(Path(run_dir) / "metrics.jsonl")
    if "train_acc" not in m or "test_acc" not in m:
        raise BadRecord("metrics.jsonl has no train_acc or test_acc")
    rows = [{"step": s, "train_acc": a, "test_acc": b}
            for s, a, b in zip(m.step, m.train_acc, m.test_acc)
            if all(is_number(x) and math.isfinite(x) for x in (s, a, b))]
    if not rows:
        raise BadRecord("metrics.jsonl has no eval with both accuracies")
    return rows


def run_phase(run_dir, config: dict) -> tuple[dict, dict | None]:
    """(phase keys, the config keys they were read with, or None where the summary had them)."""
    summary = json.loads((Path(run_dir) / SUMMARY).read_text())
    if isinstance(summary, dict) and summary.get("phase") in PHASES:
        return {"phase": summary["phase"], "onset_step": summary.get("onset_step")}, None
    params = reading(config)
    return phase(curve(run_dir), **params), params


def with_phases(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(runs with `phase` and `onset_step` columns, one line per run left out and why). A run
    read again gets its config's grok.* set to what it was read with."""
    keep, phases, onsets, configs, problems = [], [], [], [], []
    for idx, row in runs.iterrows():
        config = row.config if isinstance(row.config, dict) else {}
        try:
            got, params = run_phase(row.run, config)
        except (BadRecord, ValueError, OSError) as e:
            problems.append(f"{row.run}: no phase ({e})")
            continue
        keep.append(idx)
        phases.append(got["phase"])
        onsets.append(got.get("onset_step"))
        configs.append(config if params is None else
                       {**config, **{f"grok.{k}": v for k, v in params.items()}})
    out = runs.loc[keep].copy()
    out["phase"], out["onset_step"], out["config"] = phases, onsets, configs
    return out, problems


def counts(group: pd.DataFrame) -> str:
    """Seeds per phase, in PHASES order: "grokking 2/3, memorisation 1/3"."""
    n, seen = len(group), group.phase.value_counts()
    return ", ".join(f"{p} {seen[p]}/{n}" for p in PHASES if p in seen)


def dominant(group: pd.DataFrame) -> str:
    """The phase of most seeds; a tie goes to the first in PHASES."""
    seen = group.phase.value_counts()
    return max(PHASES, key=lambda p: (seen.get(p, 0), -PHASES.index(p)))


def diagrams(runs: pd.DataFrame, x: str, y: str) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """[(pool label, seeds per phase, dominant phase)] with `y` on the rows and `x` on the
    columns, one per pool (runs that differ in more than the seed and the axes are never one
    cell). Raises analysis.pooling.PoolError naming an axis no run has."""
    return [(label, grid(part, rows=y, cols=x, agg=counts), grid(part, rows=y, cols=x, agg=dominant))
            for label, part in pools(runs, axes=(y, x))]


def _names(index) -> list[str]:
    return [v[-1] if isinstance(v, tuple) else str(v) for v in index]


def figure(text: pd.DataFrame, colour: pd.DataFrame, out, title: str = "") -> Path:
    """The diagram as a PNG: a cell per (y, x) value pair in its dominant phase's colour, the
    seeds per phase written in it, a legend of the phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    n_rows, n_cols = text.shape
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * n_cols + 3), max(3, 0.9 * n_rows + 2)), dpi=100)
    try:
        for i in range(n_rows):
            for j in range(n_cols):
                p, t = colour.iat[i, j], text.iat[i, j]
                ax.add_patch(patches.Rectangle((j - .5, i - .5), 1, 1, ec="white", lw=1,
                                               fc="#eeeeee" if pd.isna(p) else COLOURS[p]))
                if not pd.isna(t):
                    ax.text(j, i, t.replace(", ", "\n"), ha="center", va="center", fontsize=7)
        ax.set_xlim(-.5, n_cols - .5)
        ax.set_ylim(n_rows - .5, -.5)
        ax.set_xticks(range(n_cols), _names(text.columns), rotation=45, ha="right")
        ax.set_yticks(range(n_rows), _names(text.index))
        ax.set_xlabel(text.columns.names[-1] or "")
        ax.set_ylabel(text.index.names[-1] or "")
        ax.legend(handles=[patches.Patch(color=COLOURS[p], label=p) for p in PHASES], fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return Path(out)


def html_table(text: pd.DataFrame, colour: pd.DataFrame) -> str:
    """The diagram as an HTML table (no image): cells in their dominant phase's colour."""
    corner = f"{html.escape(text.index.names[-1] or '')} \\ {html.escape(text.columns.names[-1] or '')}"
    out = ['<table class="phases"><tr><th>' + corner + "</th>"
           + "".join(f"<th>{html.escape(c)}</th>" for c in _names(text.columns)) + "</tr>"]
    for i, r in enumerate(_names(text.index)):
        cells = []
        for j in range(text.shape[1]):
            p, t = colour.iat[i, j], text.iat[i, j]
            style = "" if pd.isna(p) else f' style="background:{COLOURS[p]}" title="{html.escape(p)}"'
            cells.append(f"<td{style}>{'' if pd.isna(t) else html.escape(t)}</td>")
        out.append(f"<tr><th>{html.escape(r)}</th>{''.join(cells)}</tr>")
    return "".join(out) + "</table>"


def legend_html() -> str:
    keys = "".join(f'<span class="phase" style="background:{COLOURS[p]}">{html.escape(p)}</span> '
                   for p in PHASES)
    return f'<p class="note">{keys}<br>{html.escape(LEGEND)}</p>'


def report_section(runs: pd.DataFrame, rows: str, cols: str) -> str:
    """The report's phase diagram section: one table per pool, `rows` x `cols` as its grid."""
    got, problems = with_phases(runs)
    body = ['<h2 id="phases">Phases</h2>']
    if got.empty:
        return body[0] + '<p class="note">no run has a phase (' + html.escape("; ".join(problems)) + ")</p>"
    for label, text, colour in diagrams(got, x=cols, y=rows):
        body.append(f"<h3>{html.escape(label or 'all runs')}</h3>" + html_table(text, colour))
    body.append(legend_html())
    if problems:
        body.append('<ul class="note">' + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    return "\n".join(body)
