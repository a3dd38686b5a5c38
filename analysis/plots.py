"""Plots: a heatmap of a grid table (colour bar, title; as SVG its cells are links). A run's own
curves are grok.figures.plot_run."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on compute nodes
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plain(text) -> str:
    """Text from data (a sweep's path, an axis value) as matplotlib draws it: a `$` escaped, so
    that `a$b` or `$x` is drawn as written, never parsed as mathtext (where it fails)."""
    return str(text).replace("$", r"\$")


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
                t = ax.text(j, i, "" if pd.isna(text) else plain(text), ha="center", va="center", fontsize=8,
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
        bar.set_label("share of seeds that generalised\n(< 0.5: none did; half the best test acc)",
                      fontsize=7)
        if title:
            ax.set_title(plain(title), fontsize=9)
        fig.tight_layout()
        fig.savefig(out, format=fmt or ("svg" if str(out).endswith(".svg") else "png"))
    finally:
        plt.close(fig)
    return out
