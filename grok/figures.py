"""A run's figure: its curves against the step (linear axis by default, memorisation and grok
steps marked), as `python -m analysis plots` draws it and a W&B run keeps it."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on compute nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from grok.record.files import METRICS, SUMMARY, is_number, number  # noqa: E402

LOSS_MEASURES = ["excluded_loss", "restricted_loss"]  # beside train/test loss, as Nanda et al. plot them
MEASURES = ["gini_embed", "gini_wl", "ffs_embed", "ffs_wl", "fcr_embed", "fcr_wl", "weight_sq_total"]


class BadRecord(ValueError):
    """A run folder whose record cannot be plotted; the message says why."""


def read_metrics(path, notes: list | None = None) -> pd.DataFrame:
    """A run's metrics.jsonl as a frame, one row per eval, values as written (exact floats).

    Non-finite values may be bare NaN/Infinity (Python's json), the strings "NaN", "Infinity",
    "-Infinity", or null: all come back as floats (null as NaN). A line that is not JSON (a kill
    mid-write tears the last one) is left out, with a line in `notes`. Raises BadRecord when the
    file is missing or holds no complete eval."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadRecord(f"no {path.name}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadRecord(f"unreadable {path.name} ({type(e).__name__}: {e})") from None
    rows, bad = [], []
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        step = number(row.get("step")) if isinstance(row, dict) else None
        if is_number(step) and math.isfinite(step):
            rows.append({k: number(v) for k, v in row.items()})
        else:
            bad.append("torn last line" if i == len(lines) else f"line {i}")
    if bad and notes is not None:
        notes.append(f"{path.name}: left out {', '.join(bad)} (not a complete eval)")
    if not rows:
        raise BadRecord(f"{'empty' if not text.strip() else 'no complete eval in'} {path.name}")
    m = pd.DataFrame(rows)
    return m.sort_values("step", kind="stable").reset_index(drop=True)


def series(m: pd.DataFrame, name: str) -> pd.Series:
    """Column `name` by step, finite values only (a diverged run's NaN/inf left out)."""
    if name not in m:
        return pd.Series(dtype=float)
    col = pd.Series(pd.to_numeric(m[name], errors="coerce").to_numpy(dtype=float), index=m.step.to_numpy())
    return col[np.isfinite(col.to_numpy())]


def plot_run(run_dir, out_png, size=(15, 4), dpi=100, notes: list | None = None,
             log_steps: bool = False) -> Path:
    """Loss, accuracy and (when recorded) progress measures against the step, on a linear axis
    (the grokking jump is late: a log axis squeezes it against the right edge) or, with
    `log_steps`, a log axis. What is finite is drawn: a diverged run's curves end where its
    values turned NaN or infinite (marked). Raises BadRecord for a folder with nothing to plot
    (see read_metrics)."""
    run_dir = Path(run_dir)
    m = read_metrics(run_dir / METRICS, notes)
    try:
        s = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError) as e:
        raise BadRecord(f"unreadable {SUMMARY} ({type(e).__name__})") from None
    s = s if isinstance(s, dict) else {}
    m = m.assign(step=pd.to_numeric(m.step, errors="coerce").astype(float))
    positive = m[m.step > 0]
    log_x = log_steps and not positive.empty
    m = positive if log_x else m  # log axis: step 0 left out unless it is all there is
    diverged = None
    if "train_loss" in m:
        loss = pd.to_numeric(m.train_loss, errors="coerce").values
        bad = m.step.values[~np.isfinite(loss)]
        diverged = float(bad[0]) if len(bad) else None
    fig, axes = plt.subplots(1, 3, figsize=size, dpi=dpi)
    try:
        for split, style in (("train", "-"), ("test", "--")):
            for ax, what in ((axes[0], "loss"), (axes[1], "acc")):
                col = series(m, f"{split}_{what}")
                ax.plot(col.index, col.values, style, marker="o" if len(col) < 3 else None, ms=3,
                        label=f"{split} {what}")  # a point or two: a line would not show them
        for name in sorted(c for c in m.columns if str(c).startswith("test_loss/")):
            col = series(m, name)  # per answer position (multi-token tasks): thin lines
            axes[0].plot(col.index, col.values, lw=0.8, alpha=0.8, label=name[len("test_"):])
        for name in LOSS_MEASURES:  # the full measures are sparser than the evals: mark each point
            col = series(m, name)
            if len(col):
                axes[0].plot(col.index, col.values, "o-", ms=3, label=name.replace("_", " "))
        if any((line.get_ydata() > 0).any() for line in axes[0].get_lines()):
            axes[0].set_yscale("log")
        else:
            axes[0].text(0.5, 0.5, "no finite loss recorded", ha="center", va="center",
                         transform=axes[0].transAxes)
        measures = [(name, series(m, name)) for name in MEASURES]
        measures = [(name, col) for name, col in measures if len(col)]
        for name, col in measures:
            scale = col.abs().max() or 1.0  # each measure on its own scale
            axes[2].plot(col.index, col.values / scale, marker="o" if len(col) < 3 else None, ms=3,
                         label=f"{name} (/{scale:.3g})")
        if not measures:
            axes[2].text(0.5, 0.5, "no progress measures recorded", ha="center", va="center",
                         transform=axes[2].transAxes)
        marks = [(s.get(k), color, k.replace("_", " ")) for k, color in
                 (("memorisation_step", "tab:gray"), ("grok_step", "tab:red"))]
        marks.append((diverged, "black", "diverged"))
        for ax, title in zip(axes, ("loss", "accuracy", "progress measures (scaled)")):
            if log_x:
                ax.set_xscale("log")
            ax.set_xlabel("step")
            ax.set_title(title)
            for step, color, label in marks:
                if is_number(step) and math.isfinite(step) and step > 0:
                    ax.axvline(step, color=color, lw=1, ls=":", label=label)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        what = (f"{s.get('op_pretty', '?')} mod {s.get('p')}, frac {s.get('frac')}" if s.get("op")
                else f"{s.get('task_desc', '?')}, n_train {s.get('n_train') or 'infinite'}")
        fig.suptitle(f"{what}, seed {s.get('seed')}: {s.get('verdict')}"
                     + (f" (diverged at step {diverged:g})" if diverged is not None else ""))
        fig.tight_layout()
        fig.savefig(out_png)
    finally:
        plt.close(fig)
    return Path(out_png)
