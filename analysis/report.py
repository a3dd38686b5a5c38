"""One self-contained HTML page per sweep: grid heatmaps, per cell the test-accuracy curves of its
seeds, the Fourier spectra of W_E and W_L at the end, and every run's progress measures.

Nothing is fetched when the page is opened: heatmaps are inline SVG (each cell a link to its
section), the other figures inline base64 PNG, the style inline. Spectra are read from each
run's final `checkpoint.pt` with `grok.record.checkpoint.read` (weights only, never unpickled),
for modular runs whose weights carry W_E, W_out and W_U.
"""

import base64
import html
import io
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from grok.figures import MEASURES, BadRecord, read_metrics, series  # noqa: E402
from grok.measures import fourier_coeffs, frequency_norms  # noqa: E402
from grok.record import checkpoint  # noqa: E402
from grok.record.files import CHECKPOINT, atomic_write  # noqa: E402

from .boundary import section  # noqa: E402
from .phases import report_section  # noqa: E402
from .plots import heatmap  # noqa: E402
from .pooling import pools  # noqa: E402
from .tables import LEGEND, axis_labels, cell, grid, grokked_share  # noqa: E402

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
h1{font-size:1.4em;overflow-wrap:anywhere}h2{border-bottom:1px solid #ccc;padding-top:.5em}
section.cell{margin:1em 0;padding:.5em;border-left:4px solid #ddd}img{max-width:100%}
.note{color:#666;font-size:90%}table.runs{border-collapse:collapse;font-size:85%}
table.runs td,table.runs th{border:1px solid #ccc;padding:2px 6px}svg{max-width:100%;height:auto}
table.phases{border-collapse:collapse;font-size:85%}span.phase{padding:1px 6px;color:#222}
table.phases td,table.phases th{border:1px solid #fff;padding:6px 10px;text-align:center}"""
MARKS = (("memorisation_step", "tab:gray", "memorised"), ("grok_step", "tab:red", "grokked"))


def _png(fig, dpi=80) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _svg(values, labels, title, urls) -> str:
    buf = io.StringIO()
    heatmap(values, labels, buf, title=title, urls=urls, fmt="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline in HTML


def _mark(ax, summary: dict, color=None):
    for key, default, label in MARKS:
        step = summary.get(key)
        if isinstance(step, (int, float)) and math.isfinite(step):
            ax.axvline(step, color=color or default, lw=1, ls=":" if key == "grok_step" else "--")


def spectrum(run_dir, p) -> dict | None:
    """{"W_E": norms, "W_L": norms} per frequency 0..(p-1)//2 (0: the constant) of the final
    weights, or None where the run has no such weights (another task or model)."""
    try:
        ck = checkpoint.read(Path(run_dir) / CHECKPOINT)
        w = ck["model"]
        W_E, W_L = w["W_E"][:p].double(), (w["W_out"].double() @ w["W_U"].double())
    except Exception:  # noqa: BLE001 - no checkpoint, another layout: no spectrum, said on the page
        return None
    if W_L.shape[-1] != p or W_E.dim() != 2 or W_L.dim() != 2:
        return None
    return {name: frequency_norms(fourier_coeffs(W)).numpy() for name, W in (("W_E", W_E), ("W_L", W_L.T))}


def cell_figure(part: pd.DataFrame, metrics: dict, spectra: dict, log_steps: bool) -> str:
    """Test accuracy of every seed overlaid (memorisation and grok steps marked), and the final
    Fourier spectra of W_E and W_L of every seed that has them."""
    have = {r: s for r, s in spectra.items() if s is not None}
    n = 1 + (2 if have else 0)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.2), squeeze=False)
    axes = axes[0]
    colors = plt.get_cmap("tab10")
    for i, row in enumerate(part.itertuples()):
        c = colors(i % 10)
        m = metrics.get(row.run)
        if m is not None:
            acc = series(m, "test_acc")
            axes[0].plot(acc.index, acc.values, color=c, lw=1.2, label=f"seed {row.seed}")
            tr = series(m, "train_acc")
            axes[0].plot(tr.index, tr.values, color=c, lw=0.6, alpha=0.5)
        _mark(axes[0], {"memorisation_step": row.memorisation_step, "grok_step": row.grok_step}, c)
        if row.run in have:
            for ax, name in zip(axes[1:], ("W_E", "W_L")):
                s = have[row.run][name]
                ax.plot(range(len(s)), s, "o-", ms=2, color=c, lw=1, label=f"seed {row.seed}")
    axes[0].set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02),
                title="test acc (thin: train); dashed: memorised, dotted: grokked")
    if log_steps:
        axes[0].set_xscale("symlog")
    axes[0].legend(fontsize=7)
    for ax, name in zip(axes[1:], ("W_E", "W_L")):
        ax.set(xlabel="frequency k (0: constant)", ylabel="norm", title=f"Fourier spectrum of {name}, end")
    fig.tight_layout()
    return _png(fig)


def measures_figure(part: pd.DataFrame, metrics: dict, log_steps: bool) -> str | None:
    """Small multiples: a row per run, a panel per progress measure it recorded (per-position
    test losses for multi-token tasks), with a line naming the panels."""
    runs = [(row, metrics.get(row.run)) for row in part.itertuples()]
    runs = [(row, m) for row, m in runs if m is not None]
    if not runs:
        return None
    names = [c for c in MEASURES + ["excluded_loss", "restricted_loss"] if any(c in m for _, m in runs)]
    pos = sorted({c for _, m in runs for c in m.columns if str(c).startswith("test_loss/")})
    panels = names + (["per-position test loss"] if pos else [])
    if not panels:
        return None
    fig, axes = plt.subplots(len(runs), len(panels), figsize=(2.3 * len(panels), 1.7 * len(runs)),
                             squeeze=False, sharex=True)
    for i, (row, m) in enumerate(runs):
        for j, name in enumerate(panels):
            ax = axes[i, j]
            cols = pos if name == "per-position test loss" else [name]
            for col in cols:
                s = series(m, col)
                ax.plot(s.index, s.values, lw=1, label=col.split("/")[-1])
            _mark(ax, {"memorisation_step": row.memorisation_step, "grok_step": row.grok_step})
            if log_steps:
                ax.set_xscale("symlog")
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"seed {row.seed}", fontsize=8)
            if name == "per-position test loss" and i == 0:
                ax.legend(fontsize=5)
    fig.tight_layout()
    what = ", ".join(names + ([f"per-position test loss ({', '.join(c.split('/')[-1] for c in pos)})"]
                              if pos else []))
    return _png(fig) + f'<p class="note">rows: seeds; panels: {html.escape(what)}</p>'


def _anchor(*parts) -> str:
    return "-".join(str(p) for p in parts)


def write_report(runs: pd.DataFrame, out_html, title: str, rows="frac", cols="op",
                 log_steps: bool = False, problems=(), boundary: dict | None = None) -> Path:
    """The page for `runs` (analysis.collate.load_runs), pooled as the grid pools them; with
    `boundary` (a boundary sweep's boundary.json), its table and plot first."""
    metrics, notes = {}, []
    for run in runs.run:
        try:
            metrics[run] = read_metrics(Path(run) / "metrics.jsonl")
        except BadRecord as e:
            notes.append(f"{run}: no curves ({e})")
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(runs)} complete runs. {html.escape(LEGEND)}. Colour: share of seeds that "
            f"generalised (below 0.5: none did, half the best test accuracy). Click a cell for its "
            f"runs. <a href=\"#phases\">Phases</a>: the phase each run ended in.</p>"]
    if boundary is not None:
        body.append(section(boundary))
    for k, (label, part) in enumerate(pools(runs, axes=(rows, cols))):
        labels, shares = grid(part, rows=rows, cols=cols, agg=cell), grid(part, rows=rows, cols=cols,
                                                                           agg=grokked_share)
        rl, row_order, _ = axis_labels(part, rows)
        cl, col_order, _ = axis_labels(part, cols)
        urls = {(i, j): f"#{_anchor('cell', k, i, j)}" for i, r in enumerate(row_order)
                for j, c in enumerate(col_order) if ((rl == r) & (cl == c)).any()}
        body.append(f"<h2>{html.escape(label or 'all runs')}: {len(part)} runs, "
                    f"{part.seed.nunique()} seed(s)</h2>")
        short = title if len(title) <= 80 else title[:77] + "..."
        body.append(_svg(shares, labels, label or short, urls))
        for (i, j), url in urls.items():
            r, c = row_order[i], col_order[j]
            members = part[(rl == r) & (cl == c)].sort_values("seed")
            spectra = {}
            for row in members.itertuples():
                p = row.p if isinstance(row.op, str) else None
                spectra[row.run] = spectrum(row.run, int(p)) if p is not None and not pd.isna(p) else None
            body.append(f'<section class="cell" id="{url[1:]}"><h3>{html.escape(rows)}={html.escape(r)}, '
                        f'{html.escape(cols)}={html.escape(c)}: {html.escape(labels.iat[i, j])}</h3>')
            body.append(cell_figure(members, metrics, spectra, log_steps))
            if not any(s is not None for s in spectra.values()):
                body.append('<p class="note">no Fourier spectrum (not a modular run with W_E, W_out, '
                            'W_U in its checkpoint)</p>')
            body.append('<table class="runs"><tr><th>seed</th><th>verdict</th><th>memorised</th>'
                        '<th>grok step</th><th>best test acc</th><th>run</th></tr>')
            for row in members.itertuples():
                body.append(f'<tr id="{_anchor("run", k, i, j, row.seed)}"><td>{row.seed}</td>'
                            f"<td>{html.escape(str(row.verdict))}</td><td>{_num(row.memorisation_step)}</td>"
                            f"<td>{_num(row.grok_step)}</td><td>{row.best_test_acc:.3f}</td>"
                            f"<td>{_folder_link(row.run, out_html)}</td></tr>")
            body.append("</table>")
            fig = measures_figure(members, metrics, log_steps)
            body.append(fig or '<p class="note">no progress measures recorded</p>')
            body.append("</section>")
    body.append(report_section(runs, rows, cols))
    if notes or problems:
        body.append("<h2>Left out</h2><ul>" + "".join(f"<li>{html.escape(str(n))}</li>"
                                                      for n in [*problems, *notes]) + "</ul>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    atomic_write(Path(out_html), lambda f: f.write(page.encode()))
    return Path(out_html)


def _folder_link(run, out_html) -> str:
    """The run's folder by its own name, linked relative to the page (the full path on hover)."""
    rel = os.path.relpath(Path(run).resolve(), Path(out_html).resolve().parent)
    return (f'<a href="{html.escape(Path(rel).as_posix())}/" title="{html.escape(str(run))}">'
            f"{html.escape(Path(run).name)}</a>")


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"
