"""Plots: a heatmap of a grid table (colour bar, title; as SVG its cells are links). A run's own
curves are grok.figures.plot_run."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on compute nodes
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

SHARE = "share of seeds that generalised"  # the heatmap's one quantity, 0 to 1


def plain(text) -> str:
    """Text from data (a sweep's path, an axis value) as matplotlib draws it: a `$` escaped, so
    that `a$b` or `$x` is drawn as written, never parsed as mathtext (where it fails)."""
    return str(text).replace("$", r"\$")


def heatmap(values: pd.DataFrame, labels: pd.DataFrame, out, dpi=100, title: str | None = None,
            urls: dict | None = None, fmt: str | None = None, bar_label: str = SHARE):
    """Grid table as colour (one quantity from 0 to 1, named by `bar_label`: by default the share
    of seeds that generalised; the best accuracy of the others is the cell's text) with the
    table's own text in each cell, a colour bar and a title. `out` ending in .svg: a vector image
    whose text is text (searchable; the colour bar's label is the group `colorbar-label`) and in
    which cell (i, j) links to urls[(i, j)] (the report's anchors); else a PNG. `out` may be a
    file object (then `fmt`)."""
    fmt = fmt or ("svg" if str(out).endswith(".svg") else "png")
    n_rows, n_cols = values.shape
    with plt.rc_context({"svg.fonttype": "none"}):
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
                t = ax.text(j, i, "" if pd.isna(text) else plain(text), ha="center", va="center", fontsize=10,
                            color="white" if dark else "black")
                if urls and (i, j) in urls:
                    rect.set_url(urls[(i, j)])
                    t.set_url(urls[(i, j)])
        ax.set_xlim(-0.5, n_cols - 0.5)
        ax.set_ylim(n_rows - 0.5, -0.5)
        cols = [plain(c[-1] if isinstance(c, tuple) else c) for c in values.columns]
        rows = [plain(r[-1] if isinstance(r, tuple) else r) for r in values.index]
        ax.set_xticks(range(n_cols), cols, rotation=45, ha="right")
        ax.set_yticks(range(n_rows), rows)
        ax.set_xlabel(plain(values.columns.names[-1] or ""))
        ax.set_ylabel(plain(values.index.names[-1] or ""))
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.05)
        bar.set_label(plain(bar_label), fontsize=9)
        bar.ax.yaxis.label.set_gid("colorbar-label")
        if title:
            ax.set_title(plain(title), fontsize=9)
        fig.tight_layout()
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(out, format=fmt)
    finally:
        plt.close(fig)
    return out
