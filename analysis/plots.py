"""Plots: a run's curves (linear step axis by default, memorisation and grok steps marked) and a
heatmap of a grid table (colour bar, title; as SVG its cells are links)."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on compute nodes
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.collate import is_number, number  # noqa: E402
from grok.tracking import METRICS, SUMMARY  # noqa: E402

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


def _series(m: pd.DataFrame, name: str) -> pd.Series:
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
                col = _series(m, f"{split}_{what}")
                ax.plot(col.index, col.values, style, marker="o" if len(col) < 3 else None, ms=3,
                        label=f"{split} {what}")  # a point or two: a line would not show them
        for name in sorted(c for c in m.columns if str(c).startswith("test_loss/")):
            col = _series(m, name)  # per answer position (multi-token tasks): thin lines
            axes[0].plot(col.index, col.values, lw=0.8, alpha=0.8, label=name[len("test_"):])
        for name in LOSS_MEASURES:  # the full measures are sparser than the evals: mark each point
            col = _series(m, name)
            if len(col):
                axes[0].plot(col.index, col.values, "o-", ms=3, label=name.replace("_", " "))
        if any((line.get_ydata() > 0).any() for line in axes[0].get_lines()):
            axes[0].set_yscale("log")
        else:
            axes[0].text(0.5, 0.5, "no finite loss recorded", ha="center", va="center",
                         transform=axes[0].transAxes)
        measures = [(name, _series(m, name)) for name in MEASURES]
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


def heatmap(values: pd.DataFrame, labels: pd.DataFrame, out, dpi=100, title: str | None = None,
            urls: dict | None = None, fmt: str | None = None):
    """Grid table as colour (share of seeds that generalised; else half the best accuracy, so
    every shade below 0.5 is "did not generalise") with the table's own text in each cell, a
    colour bar and a title. `out` ending in .svg: a vector image in which cell (i, j) links to
    urls[(i, j)] (the report's anchors); else a PNG. `out` may be a file object (then `fmt`)."""
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * n_cols + 3), max(3, 0.5 * n_rows + 2)), dpi=dpi)
    try:
        shade = values.astype(float).values
        cmap, norm = plt.get_cmap("RdYlGn"), matplotlib.colors.Normalize(0, 1)
        for i in range(n_rows):
            for j in range(n_cols):
                blank = pd.isna(shade[i, j])
                rect = matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, ec="white", lw=1,
                                                    fc="#eeeeee" if blank else cmap(norm(shade[i, j])))
                ax.add_patch(rect)
                text = labels.iat[i, j]
                dark = not blank and not 0.2 < shade[i, j] < 0.8  # ends of RdYlGn
                t = ax.text(j, i, "" if pd.isna(text) else text, ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
                if urls and (i, j) in urls:
                    rect.set_url(urls[(i, j)])
                    t.set_url(urls[(i, j)])
        ax.set_xlim(-0.5, n_cols - 0.5)
        ax.set_ylim(n_rows - 0.5, -0.5)
        cols = [c[-1] if isinstance(c, tuple) else c for c in values.columns]
        rows = [r[-1] if isinstance(r, tuple) else r for r in values.index]
        ax.set_xticks(range(n_cols), cols, rotation=45, ha="right")
        ax.set_yticks(range(n_rows), rows)
        ax.set_xlabel(values.columns.names[-1] or "")
        ax.set_ylabel(values.index.names[-1] or "")
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.05)
        bar.set_label("share of seeds that generalised\n(< 0.5: none did; half the best test acc)",
                      fontsize=7)
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out, format=fmt or ("svg" if str(out).endswith(".svg") else "png"))
    finally:
        plt.close(fig)
    return out
