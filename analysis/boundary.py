"""A boundary search's result as a table and a plot: `python -m analysis boundary <sweep>`.

The sweep folder's `boundary.json` (written by `hydra/sweeper=boundary` after every round) is read
as JSON data. A row per cell: the cell's own overrides as columns (`op`, `p`, ...; the overrides
every cell shares go to the title), its status, the interval, the outcome (grokked seeds / seeds)
at each point tried, the points left unknown and the runs spent. The plot draws each cell's
interval as a bar from its "no" end to its "yes" end, the critical value (the yes end: the
easiest-found value where it grokked) as a dot, cells sorted by it and coloured by op kind.
"""

import json
import math
from pathlib import Path

import pandas as pd

from grok.boundary import cell_labels
from grok.opkinds import KIND_ORDER, op_kind

REPORT = "boundary.json"


class BoundaryError(Exception):
    """No readable boundary.json: one line."""


def read(sweep_dir) -> dict:
    path = Path(sweep_dir) / REPORT
    try:
        doc = json.loads(path.read_text())
    except OSError:
        raise BoundaryError(f"{path}: not found (a boundary sweep writes it: "
                            f"hydra/sweeper=boundary)") from None
    except ValueError as e:
        raise BoundaryError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("rows"), list) \
            or not isinstance(doc.get("cells"), list) or len(doc["cells"]) != len(doc["rows"]):
        raise BoundaryError(f"{path}: not a boundary report of format 1")
    return doc


def _fmt(v) -> str:
    return "-" if v is None else f"{v:g}"


def _split(override: str) -> tuple[str, str]:
    key, _, value = str(override).partition("=")
    return key.lstrip("+"), value


def table(doc: dict) -> tuple[list[str], pd.DataFrame]:
    """(the overrides every cell shares, the table: a row per cell)."""
    shared, own = cell_labels(doc["cells"])
    axis = doc["axis"]["name"]
    rows = []
    for row, label in zip(doc["rows"], own):
        lo, hi = row.get("interval") or [None, None]
        points = " ".join(f"{_fmt(p['value'])}:{p['grokked']}/{p['seeds']}"
                          + ("" if p["known"] == p["seeds"] else f"({p['seeds'] - p['known']}?)")
                          for p in row.get("points", []))
        rows.append({**dict(_split(o) for o in label),
                     "status": row["status"] + (" (capped)" if row.get("capped") else ""),
                     f"{axis} from": lo, f"{axis} to": hi,
                     "critical": row.get("yes_end"),
                     "non_monotone": bool(row.get("non_monotone")),
                     f"grokked/seeds at each {axis}": points,
                     "unknown": " ".join(_fmt(v) for v in row.get("unknown_inside", [])),
                     "runs": row.get("runs", 0)})
    return shared, pd.DataFrame(rows)


def _kind(label: list[str]) -> str:
    ops = [v for k, v in map(_split, label) if k == "op"]
    if not ops:
        return "all"
    try:
        return op_kind(ops[0].strip("'\""))
    except Exception:  # noqa: BLE001 - an op the language cannot parse: no kind, still drawn
        return "other"


def _plain(text: str) -> str:
    """Data as literal text: a `$` would start matplotlib's mathtext."""
    return text.replace("$", r"\$")


def plot(doc: dict, out, fmt: str | None = None):
    """Each cell's interval as a bar, its critical value as a dot (cells sorted by it, coloured
    by op kind); a cell that groks everywhere or nowhere as an arrow past the range's end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shared, own = cell_labels(doc["cells"])
    ax_info = doc["axis"]
    lo_end, hi_end = float(ax_info["lo"]), float(ax_info["hi"])
    up = ax_info["direction"] == "up"

    def key(i):
        row = doc["rows"][i]
        v = row.get("yes_end")
        if v is None:  # never grokked: after every cell that did
            v = math.inf if up else -math.inf
        return (v if up else -v, " ".join(own[i]))

    order = sorted(range(len(own)), key=key)
    kinds = [_kind(own[i]) for i in order]
    palette = plt.get_cmap("tab10")
    colour = {k: palette(n % 10) for n, k in enumerate(
        [k for k in KIND_ORDER if k in kinds] + sorted(set(kinds) - set(KIND_ORDER)))}
    span = hi_end - lo_end
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(order) + 1.5)), dpi=100)
    try:
        for y, i in enumerate(order):
            row, c = doc["rows"][i], colour[kinds[y]]
            a, b = row.get("interval") or [None, None]
            if row["status"] in ("everywhere", "nowhere"):
                x = (lo_end if (row["status"] == "everywhere") == up else hi_end)
                d = -0.04 * span if x == lo_end else 0.04 * span
                ax.annotate("", xy=(x + d, y), xytext=(x, y),
                            arrowprops={"arrowstyle": "->", "color": c})
                ax.plot([x], [y], "o", color=c, mfc="white")
                continue
            if a is not None and b is not None:
                ax.plot([a, b], [y, y], "-", color=c, lw=3, alpha=0.6, solid_capstyle="butt")
            if row.get("yes_end") is not None:
                ax.plot([row["yes_end"]], [y], "o", color=c)
            if row.get("non_monotone"):
                ax.plot(row.get("against", []), [y] * len(row.get("against", [])), "x", color="k")
        ax.set_yticks(range(len(order)), [_plain(" ".join(own[i]) or "(one cell)") for i in order],
                      fontsize=7)
        ax.set_xlim(lo_end - 0.06 * span, hi_end + 0.06 * span)
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_xlabel(f"{ax_info['name']} (bar: interval where grokking starts; dot: lowest "
                      f"value found grokking)" if up else f"{ax_info['name']} (bar: interval; "
                      f"dot: the highest value found grokking)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        handles = [plt.Line2D([], [], color=colour[k], marker="o", ls="-", label=k) for k in colour]
        if any(r.get("non_monotone") for r in doc["rows"]):
            handles.append(plt.Line2D([], [], color="k", marker="x", ls="",
                                      label="no, easier than a yes (non-monotone)"))
        ax.legend(handles=handles, fontsize=7, loc="best", title="op kind", title_fontsize=7)
        title = " ".join(shared)
        ax.set_title(_plain(title if len(title) <= 90 else title[:87] + "..."), fontsize=8)
        fig.tight_layout()
        fig.savefig(out, format=fmt or ("svg" if str(out).endswith(".svg") else "png"))
    finally:
        plt.close(fig)
    return out


def section(doc: dict) -> str:
    """The report's section: the table and the plot (inline SVG), escaped."""
    import html
    import io

    shared, rows = table(doc)
    ax = doc["axis"]
    buf = io.StringIO()
    plot(doc, buf, fmt="svg")
    svg = buf.getvalue()
    return (f'<h2 id="boundary">Boundary: where grokking starts in {html.escape(ax["name"])}</h2>'
            f'<p>{html.escape(ax["name"])} in [{html.escape(ax["lo"])}, {html.escape(ax["hi"])}] '
            f'at resolution {html.escape(ax["resolution"])}; a point is a yes where {doc["k"]} of '
            f'{len(doc["seeds"])} seed(s) {html.escape(doc["outcome_rule"])}. {doc["runs_spent"]} '
            f'run(s) in {doc["rounds"]} round(s), {doc["reused"]} reused. Every cell: '
            f'{html.escape(" ".join(shared)) or "-"}.</p>'
            + svg[svg.index("<svg"):]
            + rows.to_html(index=False, na_rep="-", classes="runs", border=0, escape=True))
