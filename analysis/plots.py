"""PNG plots: a run's curves (log steps, grok step marked) and a heatmap of a grid table."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on compute nodes
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from grok.tracking import METRICS, SUMMARY  # noqa: E402

LOSS_MEASURES = ["excluded_loss", "restricted_loss"]  # beside train/test loss, as Nanda et al. plot them
MEASURES = ["gini_embed", "gini_wl", "ffs_embed", "ffs_wl", "fcr_embed", "fcr_wl", "weight_sq_total"]


def plot_run(run_dir, out_png, size=(15, 4), dpi=100) -> Path:
    """Loss, accuracy and (when recorded) progress measures against log step."""
    run_dir = Path(run_dir)
    m = pd.read_json(run_dir / METRICS, lines=True, precise_float=True)
    s = json.loads((run_dir / SUMMARY).read_text())
    measures = [c for c in MEASURES if c in m and m[c].notna().any()]
    fig, axes = plt.subplots(1, 3, figsize=size, dpi=dpi)
    m = m[m.step > 0]  # log axis
    for split, style in (("train", "-"), ("test", "--")):
        axes[0].plot(m.step, m[f"{split}_loss"], style, label=f"{split} loss")
        axes[1].plot(m.step, m[f"{split}_acc"], style, label=f"{split} acc")
    for name in LOSS_MEASURES:  # the full measures are sparser than the evals: mark each point
        if name in m:
            col = m.set_index("step")[name].dropna()
            axes[0].plot(col.index, col.values, "o-", ms=3, label=name.replace("_", " "))
    axes[0].set_yscale("log")
    for name in measures:
        col = m.set_index("step")[name].dropna()
        scale = col.abs().max() or 1.0  # each measure on its own scale
        axes[2].plot(col.index, col.values / scale, label=f"{name} (/{scale:.3g})")
    if not measures:
        axes[2].text(0.5, 0.5, "no progress measures recorded", ha="center", va="center",
                     transform=axes[2].transAxes)
    for ax, title in zip(axes, ("loss", "accuracy", "progress measures (scaled)")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        for key, color in (("memorisation_step", "tab:gray"), ("grok_step", "tab:red")):
            if s.get(key):
                ax.axvline(s[key], color=color, lw=1, ls=":", label=key.replace("_", " "))
        ax.legend(fontsize=7)
    fig.suptitle(f"{s.get('op_pretty', '?')} mod {s.get('p')}, frac {s.get('frac')}, "
                 f"seed {s.get('seed')}: {s.get('verdict')}")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)


def heatmap(values: pd.DataFrame, labels: pd.DataFrame, out_png, dpi=100) -> Path:
    """Grid table as colour (share of seeds that generalised; else half the best accuracy)
    with the table's own text in each cell."""
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * n_cols + 2), max(3, 0.5 * n_rows + 1.5)), dpi=dpi)
    shade = values.astype(float).values
    ax.imshow(shade, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    cols = [c[-1] if isinstance(c, tuple) else c for c in values.columns]
    rows = [r[-1] if isinstance(r, tuple) else r for r in values.index]
    ax.set_xticks(range(n_cols), cols, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), rows)
    for i in range(n_rows):
        for j in range(n_cols):
            text = labels.iat[i, j]
            dark = not pd.isna(shade[i, j]) and not 0.2 < shade[i, j] < 0.8  # ends of RdYlGn
            ax.text(j, i, "" if pd.isna(text) else text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xlabel(values.columns.names[-1] or "")
    ax.set_ylabel(values.index.names[-1] or "")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
