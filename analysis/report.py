"""One self-contained HTML page per sweep: what the runs share and where they differ, grid
heatmaps, per cell the accuracy and loss curves of its seeds, the Fourier spectra of W_E and W_L
at the end, and every run's progress measures.

Nothing is fetched when the page is opened: heatmaps are inline SVG (each cell a link to its
section, in the same tab), the other figures inline base64 PNG drawn at the page's width (so
their text is read at its own size), the style inline. Spectra are read from each run's final
`checkpoint.pt` with `grok.record.checkpoint.read` (weights only, never unpickled), for modular
runs whose weights carry W_E, W_out and W_U.
"""

import base64
import html
import io
import math
import os
import re
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
from .collate import is_modular  # noqa: E402
from .phases import report_section  # noqa: E402
from .plots import SHARE, heatmap  # noqa: E402
from .pooling import GROUPS, IGNORED, _under, covered, pools  # noqa: E402
from .tables import LEGEND, axis_labels, cell, generalised_share, grid  # noqa: E402

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
h1{font-size:1.4em;overflow-wrap:anywhere}h2{border-bottom:1px solid #ccc;padding-top:.5em}
section.cell{margin:1em 0;padding:.5em;border-left:4px solid #ddd}img{max-width:100%}
.note{color:#555;font-size:90%}table.runs{border-collapse:collapse;font-size:90%}
table.runs td,table.runs th{border:1px solid #ccc;padding:2px 6px}svg{max-width:100%;height:auto}
table.phases{border-collapse:collapse;font-size:85%}span.phase{padding:1px 6px;color:#222}
table.phases td,table.phases th{border:1px solid #fff;padding:6px 10px;text-align:center}
div.shared{columns:20em;column-gap:2em;font-size:90%;margin:.3em 0 0 1em}
div.kv{break-inside:avoid;display:flex;justify-content:space-between;gap:1em;border-bottom:1px solid #eee}
div.kv .k{color:#555}
div.kv .v{text-align:right;overflow-wrap:anywhere;min-width:0}summary{cursor:pointer;margin-top:.5em}
table.config{border-collapse:collapse;font-size:90%}
table.config caption{font-weight:bold;text-align:left;white-space:nowrap}
table.config th,table.config td{border-bottom:1px solid #eee;padding:1px 8px 1px 0;text-align:left;
vertical-align:top}table.config th{font-weight:normal;color:#555}
p.essentials{font-size:105%;background:#f4f4f4;padding:.4em .6em}nav a{margin-right:1em}"""
MARKS = (("memorisation_step", "tab:gray", "memorised"), ("grok_step", "tab:red", "grokked"))
# The figures are drawn at the page's width (~1200 px at DPI) so that no text is scaled down.
DPI = 100
FONTS = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 8}
# What a reader needs first, in this order: the setup line (each key's value, or "varies").
ESSENTIALS = (("task", "task.name"), ("p", "p"), ("model", "model.name"), ("d_model", "model.d_model"),
              ("layers", "model.n_layers"), ("optimizer", "optimizer.name"), ("lr", "optimizer.lr"),
              ("weight decay", "optimizer.weight_decay"), ("budget (steps)", "train.steps"),
              ("eval every", "train.eval_every"), ("grok threshold", "grok.threshold"))


def _png(fig, dpi=DPI) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _svg(values, labels, title, urls) -> str:
    buf = io.StringIO()
    heatmap(values, labels, buf, title=title, urls=urls, fmt="svg")
    text = buf.getvalue()
    # Drop the XML prolog and DOCTYPE (inline in HTML), and matplotlib's target="_blank" on
    # links: a cell's link is an anchor in this page, opened where the reader is.
    return re.sub(r'\s+target="_blank"', "", text[text.index("<svg"):])


# -- the header: what the runs share and where they differ -------------------------------------

def _configs(runs: pd.DataFrame) -> list[dict]:
    return [c if isinstance(c, dict) else {} for c in runs.config]


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def setup(runs: pd.DataFrame) -> tuple[dict, dict]:
    """({key: value} every run's config shares, {key: {shown value: runs}} for the keys in which
    the runs differ, a key some runs lack shown as "(unset)")."""
    configs = _configs(runs)
    shared, differ = {}, {}
    for key in sorted(set().union(*configs)):
        seen = {}
        for c in configs:
            shown = _fmt(c[key]) if key in c else "(unset)"
            seen[shown] = seen.get(shown, 0) + 1
        if len(seen) == 1 and "(unset)" not in seen:
            shared[key] = configs[0][key]
        else:
            differ[key] = dict(sorted(seen.items(), key=lambda kv: _order(kv[0])))
    return shared, differ


def _order(shown: str):
    try:
        return (0, float(shown), shown)
    except ValueError:
        return (1, 0.0, shown)


def _config_key(axis: str) -> str:
    return f"{axis}.name" if axis in GROUPS else axis


def label_keys(differ: dict, first=()) -> list[str]:
    """The keys that tell runs apart on the page: those they differ in, less the keys that cannot
    change a result (where a run ran, how it logged) and those an axis already says (`op` says
    `task.op`); the axes `first`, the seed last."""
    axes = [_config_key(a) for a in first]
    said = [k for a in first for k in covered(a, True) + covered(a, False)]
    keys = [k for k in differ if not _under(k, IGNORED) and (k in axes or not _under(k, said))]
    head = [k for k in axes if k in keys]
    rest = sorted(k for k in keys if k not in head and k != "seed")
    return head + rest + (["seed"] if "seed" in keys else [])


def _short(key: str) -> str:
    return key.removesuffix(".name") if key.count(".") == 1 else key


def run_labels(runs: pd.DataFrame, first=()) -> pd.Series:
    """Each run named by the keys the runs differ in (`op=x+y frac=0.5 seed=1`), not its folder."""
    keys = label_keys(setup(runs)[1], first)
    return pd.Series([" ".join(f"{_short(k)}={_fmt(c[k]) if k in c else '(unset)'}" for k in keys)
                      or Path(run).name for c, run in zip(_configs(runs), runs.run)], index=runs.index)


def header(runs: pd.DataFrame) -> str:
    """The page's setup: a line of the essentials, the keys the runs differ in with each value's
    number of runs, and the keys every run shares (in columns, sorted: a group's keys together)."""
    shared, differ = setup(runs)
    parts = []
    for name, key in ESSENTIALS:
        if key == "p" and "task.name" in shared and not is_modular(shared["task.name"]):
            continue  # a key other tasks do not read
        if key in shared:
            parts.append(f"{name} <b>{html.escape(_fmt(shared[key]))}</b>")
        elif key in differ:
            parts.append(f"{name} <b>varies</b>")
    out = ['<section id="setup"><h2>Setup</h2>',
           f'<p class="essentials">{" · ".join(parts) or "no config recorded"}</p>',
           '<table class="config" id="differ"><caption>The runs differ in</caption>'
           "<tr><th>key</th><td><i>value (runs)</i></td></tr>"]
    for key, seen in differ.items():
        note = ' <span class="note">(cannot change a result)</span>' if _under(key, IGNORED) else ""
        values = ", ".join(f"{html.escape(v)} ({n})" for v, n in seen.items())
        out.append(f'<tr data-key="{html.escape(key)}"><th>{html.escape(key)}{note}</th>'
                   f'<td class="v">{values}</td></tr>')
    out.append(f'</table><details open><summary>They share ({len(shared)} keys)</summary>'
               '<div class="shared" id="shared">')
    out.extend(f'<div class="kv" data-key="{html.escape(k)}"><span class="k">{html.escape(k)}</span> '
               f'<span class="v">{html.escape(_fmt(v))}</span></div>' for k, v in shared.items())
    out.append("</div></details></section>")
    return "\n".join(out)


# -- per cell: curves, spectra, measures --------------------------------------------------------

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


def _colour(i):
    return plt.get_cmap("tab10")(i % 10)


def cell_figure(part: pd.DataFrame, metrics: dict, spectra: dict, log_steps: bool) -> str:
    """Accuracy and loss (log axis) of every seed overlaid, test thick and train thin, with the
    memorisation and grok steps marked; below, the final Fourier spectra of W_E and W_L of every
    seed that has them, as bars side by side per frequency."""
    have = {r: s for r, s in spectra.items() if s is not None}
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(2 if have else 1, 2, figsize=(12, 7 if have else 3.6), squeeze=False)
        acc_ax, loss_ax = axes[0]
        losses = 0
        for i, row in enumerate(part.itertuples()):
            c = _colour(i)
            m = metrics.get(row.run)
            if m is not None:
                for ax, name in ((acc_ax, "acc"), (loss_ax, "loss")):
                    test, train = series(m, f"test_{name}"), series(m, f"train_{name}")
                    if name == "loss":  # a log axis: zero or negative losses are not drawn
                        test, train = test[test > 0], train[train > 0]
                    ax.plot(test.index, test.values, color=c, lw=1.6, label=f"seed {row.seed}")
                    ax.plot(train.index, train.values, color=c, lw=0.8, alpha=0.6)
                    losses += len(test) + len(train) if name == "loss" else 0
            for ax in (acc_ax, loss_ax):
                _mark(ax, {"memorisation_step": row.memorisation_step, "grok_step": row.grok_step}, c)
        acc_ax.set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02),
                   title="accuracy (thick: test, thin: train)")
        loss_ax.set(xlabel="step", ylabel="loss (log scale)", title="loss (thick: test, thin: train)")
        if losses:
            loss_ax.set_yscale("log")
        else:
            loss_ax.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=loss_ax.transAxes)
        for ax in (acc_ax, loss_ax):
            if log_steps:
                ax.set_xscale("symlog")
        acc_ax.legend(loc="best")
        if have:
            n, width = len(have), 0.8 / len(have)
            for ax, name in zip(axes[1], ("W_E", "W_L")):
                for i, row in enumerate(part.itertuples()):
                    if row.run not in have:
                        continue
                    s = have[row.run][name]
                    j = list(have).index(row.run)
                    ax.bar([k + (j - (n - 1) / 2) * width for k in range(len(s))], s, width,
                           color=_colour(i), label=f"seed {row.seed}")
                ax.set(xlabel="frequency k (0: the constant)", ylabel="norm of the cos k, sin k coefficients",
                       title=f"Fourier spectrum of {name} at the end")
                ax.yaxis.label.set_size(9)
            axes[1][0].legend(loc="best")
        fig.tight_layout()
    return _png(fig)


def measures_figure(part: pd.DataFrame, metrics: dict, log_steps: bool) -> str | None:
    """Small multiples, three to a row: a panel per progress measure recorded, every seed in its
    colour, and for multi-token tasks a panel per seed of its per-position test losses."""
    runs = [(i, row, metrics.get(row.run)) for i, row in enumerate(part.itertuples())]
    runs = [(i, row, m) for i, row, m in runs if m is not None]
    if not runs:
        return None
    names = [c for c in MEASURES + ["excluded_loss", "restricted_loss"] if any(c in m for _, _, m in runs)]
    pos = sorted({c for _, _, m in runs for c in m.columns if str(c).startswith("test_loss/")})
    panels = [(name, None) for name in names] + ([("per-position test loss", r) for r in runs] if pos else [])
    if not panels:
        return None
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 2.8 * n_rows), squeeze=False)
        for ax, (name, one) in zip(axes.flat, panels):
            if one is None:
                for i, row, m in runs:
                    s = series(m, name)
                    ax.plot(s.index, s.values, lw=1.2, color=_colour(i), label=f"seed {row.seed}")
                    _mark(ax, {"memorisation_step": row.memorisation_step, "grok_step": row.grok_step},
                          _colour(i))
                ax.set_title(name)
            else:
                i, row, m = one
                shades = plt.get_cmap("viridis")
                for k, col in enumerate(pos):
                    s = series(m, col)
                    ax.plot(s.index, s.values, lw=1.2, color=shades(0.85 * k / max(1, len(pos) - 1)),
                            label=col.split("/")[-1])
                _mark(ax, {"memorisation_step": row.memorisation_step, "grok_step": row.grok_step})
                ax.set_title(f"per-position test loss, seed {row.seed}")
                ax.legend(loc="best")
            ax.set_xlabel("step")
            if log_steps:
                ax.set_xscale("symlog")
        if names:
            axes.flat[0].legend(loc="best")
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        fig.tight_layout()
    what = ", ".join(names + ([f"per-position test loss ({', '.join(c.split('/')[-1] for c in pos)})"]
                              if pos else []))
    return _png(fig) + f'<p class="note">progress measures, seeds in their colours: {html.escape(what)}</p>'


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
    labels_of = run_labels(runs, first=(cols, rows))
    parts = pools(runs, axes=(rows, cols))
    nav = ['<a href="#setup">Setup</a>'] + [f'<a href="#pool-{k}">{html.escape(label or "all runs")}</a>'
                                           for k, (label, _) in enumerate(parts)]
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<nav>{''.join(nav)}<a href=\"#phases\">Phases</a></nav>",
            f"<p>{len(runs)} complete runs. Per table: rows {html.escape(rows)}, columns "
            f"{html.escape(cols)}; a cell pools the seeds of one config. Cell text: "
            f"{html.escape(LEGEND)}. Colour: the {SHARE} (grokked or without delay), from 0 "
            f"(red) to 1 (green). Click a cell for its runs. <a href=\"#phases\">Phases</a>: the "
            f"phase each run ended in.</p>",
            header(runs)]
    if boundary is not None:
        body.append(section(boundary))
    for k, (label, part) in enumerate(parts):
        labels, shares = grid(part, rows=rows, cols=cols, agg=cell), grid(part, rows=rows, cols=cols,
                                                                           agg=generalised_share)
        rl, row_order, _ = axis_labels(part, rows)
        cl, col_order, _ = axis_labels(part, cols)
        urls = {(i, j): f"#{_anchor('cell', k, i, j)}" for i, r in enumerate(row_order)
                for j, c in enumerate(col_order) if ((rl == r) & (cl == c)).any()}
        body.append(f'<h2 id="pool-{k}">{html.escape(label or "all runs")}: {len(part)} runs, '
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
            body.append('<p class="note">Seeds in their colours. Dashed line: the step it memorised; '
                        "dotted: the step it grokked.</p>")
            if not any(s is not None for s in spectra.values()):
                body.append('<p class="note">no Fourier spectrum (not a modular run with W_E, W_out, '
                            'W_U in its checkpoint)</p>')
            body.append('<table class="runs"><tr><th>run</th><th>verdict</th><th>memorised</th>'
                        '<th>grok step</th><th>best test acc</th></tr>')
            for row in members.itertuples():
                body.append(f'<tr id="{_anchor("run", k, i, j, row.seed)}">'
                            f"<td>{_folder_link(row.run, labels_of[row.Index], out_html)}</td>"
                            f"<td>{html.escape(str(row.verdict))}</td><td>{_num(row.memorisation_step)}</td>"
                            f"<td>{_num(row.grok_step)}</td><td>{row.best_test_acc:.3f}</td></tr>")
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


def _folder_link(run, label: str, out_html) -> str:
    """The run by its label (the keys the runs differ in), linked to its folder relative to the
    page (the full path on hover)."""
    rel = os.path.relpath(Path(run).resolve(), Path(out_html).resolve().parent)
    return (f'<a href="{html.escape(Path(rel).as_posix())}/" title="{html.escape(str(run))}">'
            f"{html.escape(label)}</a>")


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"
