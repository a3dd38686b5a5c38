"""`python -m analysis grid|exponents|plots|report|runs|labels ...`: sweeps to tables, plots and a page.

    python -m analysis grid                      # the most recent sweep under outputs/
    python -m analysis grid outputs/sweeps/A outputs/sweeps/B --rows op
    python -m analysis exponents outputs/sweeps/X
    python -m analysis plots outputs/sweeps/X              # linear step axis; --log-steps
    python -m analysis report outputs/sweeps/X             # one self-contained HTML page
    python -m analysis grid --rows task --cols frac         # any config key on either axis
    python -m analysis labels x2+y2 --p 97 --frac 0.3
    python -m analysis mixtures outputs/sweeps/X       # one column per mixture
    python -m analysis transfer outputs/sweeps/X outputs/sweeps/Y   # pre-grokked starts vs scratch
    python -m analysis boundary outputs/sweeps/X       # where grokking starts (hydra/sweeper=boundary)
    python -m analysis grid --wandb me/grok --group 2026-11-21_14-03-51-627762
    python -m analysis phases outputs/sweeps/X --x frac --y optimizer.weight_decay   # phase diagram
    python -m analysis runs outputs/sweeps/X --csv runs.csv   # a row per run (or --parquet F)

A run folder that cannot be counted or drawn (unfinished, failed, torn, incomplete, bad values)
is one `skipped <folder>: <why>` line on stderr; the rest is made (README: What analysis skips).
Every file is written under the output folder, named by `grok.record.files.slug` wherever its
name holds a value read from a record (a run folder is data: `../` in a summary is no path).

Each subcommand imports what it needs when it runs, so `grid` and `labels` start without
matplotlib, torch or W&B.
"""

import argparse
import hashlib
import sys
from pathlib import Path

from grok.record.files import file_in, slug

from .collate import latest_sweep, load_runs


def _dirs(args) -> list[Path]:
    if args.dirs:
        return [Path(d) for d in args.dirs]
    latest = latest_sweep(args.outputs)
    if latest is None:
        sys.exit(f"error: no sweep under {args.outputs}/ (run `python launch.py` first)")
    return [latest]


def _load(args, distinct: bool = True):
    """(runs, sources, output folder). Every run folder (or W&B run) left out is one line on
    stderr, `skipped <where>: <why>`; only no run at all stops the command. `distinct`: each
    run once (collate.load_runs); plots draw every copy."""
    if getattr(args, "wandb", None):  # synced runs, through the W&B API (needs the network)
        from .collate import from_wandb

        problems = []
        runs = from_wandb(args.wandb, group=args.group, api=args.api, problems=problems)
        dirs = [f"wandb:{args.wandb}" + (f"/{args.group}" if args.group else "")]
        out = Path(args.out or "outputs/analysis")
    else:
        dirs = _dirs(args)
        runs, problems = load_runs(*dirs, distinct=distinct)
        out = Path(args.out) if args.out else dirs[0] / "analysis"
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    if runs.empty:
        sys.exit(f"error: no complete runs in {', '.join(map(str, dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    return runs, dirs, out


def wandb_api(path: str):
    """The W&B API for `--wandb path`; with no API key (WANDB_API_KEY, ~/.netrc: `wandb login`),
    or one W&B refuses, one line and exit status 2, before any work, not wandb's traceback."""
    import wandb

    try:
        return wandb.Api()
    except wandb.errors.Error as e:  # UsageError: no key; AuthenticationError: refused, no network
        hint = " (or set WANDB_API_KEY)" if isinstance(e, wandb.errors.UsageError) else ""
        print(f"error: --wandb {path}: {' '.join(str(e).split())}{hint}", file=sys.stderr)
        sys.exit(2)


def tag(dirs) -> str:
    """What names this call's table files: the sweep folder(s) (or W&B project and group), made
    unique by a short hash of their full paths, so a call on another sweep never overwrites
    them (--out shared or not)."""
    def name(d):
        d = str(d)
        return d.replace(":", "_").replace("/", "_") if d.startswith("wandb:") else Path(d).name

    names = slug("+".join(map(name, dirs)), 40)
    full = "|".join(d if str(d).startswith("wandb:") else str(Path(d).resolve()) for d in map(str, dirs))
    return f"{names}-{hashlib.sha1(full.encode()).hexdigest()[:6]}"


def default_cols(args) -> str:
    """--cols, else op (frac when the rows are op)."""
    return args.cols or ("frac" if args.rows == "op" else "op")


def grids(runs, rows: str, cols: str, agg):
    """[(pool label, table, heatmap shades, pool)] for each pool of runs that differ in the seed
    (and the axes) alone."""
    from .pooling import pools
    from .tables import generalised_share, grid

    return [(label, grid(part, rows=rows, cols=cols, agg=agg),
             grid(part, rows=rows, cols=cols, agg=generalised_share), part)
            for label, part in pools(runs, axes=(rows, cols))]


def cmd_grid(args):
    from .plots import heatmap
    from .pooling import PoolError
    from .tables import LEGEND, cell, cell_numbers, grok_step_cell, to_markdown

    runs, dirs, out = _load(args)
    agg = grok_step_cell if args.cell == "grok-step" else cell
    rows, cols = args.rows, default_cols(args)
    try:
        tables = grids(runs, rows, cols, agg)
    except PoolError as e:
        sys.exit(f"error: {e}")
    where = ", ".join(map(str, dirs))
    if len(tables) > 1:
        print(f"{where}: the runs differ in more than the seed; one table per config "
              f"({len(tables)}), never pooled into one cell")
    for label, table, share, part in tables:
        name = f"grid_{tag(dirs)}_{slug(rows)}-by-{slug(cols)}" + (f"_{slug(label)}" if label else "")
        print(f"\n{where}{': ' + label if label else ''}: {len(part)} runs, "
              f"{part.seed.nunique()} seed(s)\n")
        print(to_markdown(table))
        cell_numbers(part, rows, cols).to_csv(file_in(out, f"{name}.csv"), index=False)  # numbers
        table.to_html(file_in(out, f"{name}.html"))
        file_in(out, f"{name}.md").write_text(to_markdown(table) + "\n")
        heatmap(share, table, file_in(out, f"{name}.png"), title=f"{where}{' | ' + label if label else ''}")
    legend = LEGEND if args.cell == "verdict" else \
        "median grok step (seeds that generalised / all), else best test acc"
    print(f"\n{legend}\nwritten to {out}/")


def cmd_exponents(args):
    from .tables import exponent_table

    runs, _, out = _load(args)
    table = exponent_table(runs)
    if table.empty:
        sys.exit("error: no x^a+y^b runs in these sweeps")
    print(exponent_markdown(table))
    table.to_csv(file_in(out, "exponents.csv"), index=False)


def exponent_markdown(table) -> str:
    """The exponent table for reading: a step as a whole number (2650, not 2.65e+03), a
    missing one as '-', other numbers to 3 significant digits."""
    import pandas as pd
    from tabulate import tabulate

    shown = table.astype(object).where(table.notna(), None)
    if "grok_step" in shown:
        shown["grok_step"] = pd.Series([None if v is None else round(v) for v in shown.grok_step],
                                       index=shown.index, dtype=object)
    return tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".3g",
                    missingval="-")


def plot_name(row) -> str:
    """A run's plot file name: op, frac and seed (other tasks: the task and the run's folder
    name, its identity in the sweep), then a short hash of the run's full path, so runs of
    other sweeps or configs written to the same folder never share a file."""
    where = str(Path(row.run).resolve())
    if isinstance(row.op, str):  # x^2+y^2 as x2+y2 (a spelling of the op language)
        what = f"{row.op.replace('^', '')}_p{int(row.p)}_f{row.frac:g}_s{row.seed}"
    else:
        what = f"{row.task}_{Path(row.run).name}"
        what += "" if f"seed={row.seed}" in what else f"_s{row.seed}"
    return f"run_{slug(what, 100)}-{hashlib.sha1(where.encode()).hexdigest()[:6]}"


def cmd_plots(args):
    from grok.figures import BadRecord, plot_run

    runs, _, out = _load(args, distinct=False)
    made = 0
    for row in runs.itertuples():
        run, notes = row.run, []
        try:
            png = plot_run(run, file_in(out, f"{plot_name(row)}.png"), notes=notes,
                           log_steps=args.log_steps)
        except BadRecord as e:
            print(f"skipped {run}: {e}", file=sys.stderr)
            continue
        except Exception as e:  # noqa: BLE001 - one run that cannot be drawn never stops the rest
            print(f"skipped {run}: plot failed ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        for note in notes:
            print(f"note {run}: {note}", file=sys.stderr)
        print(png)
        made += 1
    if not made:
        sys.exit(f"error: no run could be plotted ({len(runs)} skipped)")


def cmd_report(args):
    from .pooling import PoolError
    from .report import write_report

    dirs = _dirs(args)
    runs, problems = load_runs(*dirs)
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    if runs.empty:
        sys.exit(f"error: no complete runs in {', '.join(map(str, dirs))}")
    out = Path(args.out) if args.out else dirs[0] / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    cols = default_cols(args)
    boundary = None
    if (dirs[0] / "boundary.json").exists():  # a boundary sweep: its result heads the page
        from .boundary import BoundaryError, read

        try:
            boundary = read(dirs[0])
        except BoundaryError as e:
            print(f"skipped {e}", file=sys.stderr)
    try:
        page = write_report(runs, file_in(out, f"report_{tag(dirs)}.html"),
                            ", ".join(d.name or str(d) for d in dirs), rows=args.rows, cols=cols,
                            log_steps=args.log_steps, problems=problems, boundary=boundary)
    except PoolError as e:
        sys.exit(f"error: {e}")
    print(page)


def cmd_phases(args):
    """The phase diagram of each pool: a PNG, and the seeds per phase as CSV and markdown."""
    from .phases import LEGEND, diagrams, figure, with_phases
    from .pooling import PoolError
    from .tables import to_markdown

    dirs = _dirs(args)
    runs, problems = load_runs(*dirs)
    runs, more = with_phases(runs)
    for line in [*problems, *more]:
        print(f"skipped {line}", file=sys.stderr)
    if runs.empty:
        sys.exit(f"error: no complete runs with a phase in {', '.join(map(str, dirs))}")
    try:
        tables = diagrams(runs, x=args.x, y=args.y)
    except PoolError as e:  # --x or --y: a key no run has, or the same key twice
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out) if args.out else dirs[0] / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    where = ", ".join(map(str, dirs))
    for label, text, colour in tables:
        name = f"phases_{tag(dirs)}_{slug(args.y)}-by-{slug(args.x)}" + (f"_{slug(label)}" if label else "")
        print(f"\n{where}{': ' + label if label else ''}\n\n{to_markdown(text)}")
        text.to_csv(file_in(out, f"{name}.csv"))
        file_in(out, f"{name}.md").write_text(to_markdown(text) + "\n")
        figure(text, colour, file_in(out, f"{name}.png"), title=f"{where}{' | ' + label if label else ''}")
    print(f"\n{LEGEND}\nwritten to {out}/")


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def cmd_runs(args):
    """A row per run, numbers as numbers (analysis.tidy): a preview, or every column to a file."""
    from .tidy import load_sweep, preview

    if args.parquet:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            fail("parquet needs pyarrow: pip install grok[parquet]")
    dirs = _dirs(args)
    runs = load_sweep(*dirs)
    for line in runs.attrs["skipped"]:
        print(f"skipped {line}", file=sys.stderr)
    if runs.empty:
        fail(f"no complete runs in {', '.join(map(str, dirs))}")
    where = args.csv or args.parquet
    if where is None:
        print(preview(runs))
        print("\nevery column: --csv FILE or --parquet FILE; in Python: analysis.load_sweep(folder)")
        return
    try:
        if args.csv == "-":
            runs.to_csv(sys.stdout, index=False)
        elif args.csv:
            runs.to_csv(args.csv, index=False)
        else:
            runs.to_parquet(args.parquet, index=False)
    except OSError as e:
        fail(f"cannot write {where}: {e.strerror or e}")
    if where != "-":
        print(f"{len(runs)} run(s), {runs.shape[1]} column(s) written to {where}")


def cmd_labels(args):
    from grok.ops import OpError, parse_op

    from .opstats import label_stats, label_uniformity

    try:
        op = parse_op(args.op)
        op.check_p(args.p)  # 2 <= p <= MAX_P; a prime p for division (sympy.isprime: no trial division)
        stats = {**label_uniformity(op, args.p), **label_stats(op, args.p, args.frac, args.splits)}
    except (OpError, ValueError) as e:  # also a --frac that leaves a side empty, --splits < 1
        sys.exit(f"error: {e}")
    print(f"{op.pretty} mod {args.p}, frac {args.frac}")
    for k, v in stats.items():
        print(f"  {k:<22} {v:.6g}" if isinstance(v, float) else f"  {k:<22} {v}")


def _records(args):
    from .collate import read_records

    dirs = _dirs(args)
    records, problems = read_records(*dirs)
    out = Path(args.out) if args.out else dirs[0] / "analysis"
    return records, problems, dirs, out


def _write_tables(tables, name, legend, dirs, out) -> None:
    from tabulate import tabulate

    out.mkdir(parents=True, exist_ok=True)
    for key, table in tables:
        md = tabulate(table, headers="keys", tablefmt="github")
        stem = f"{name}_" + "_".join(slug(f"{k}{v}") for k, v in key.items())  # values: a record's
        print(f"\n{', '.join(map(str, dirs))}: {' '.join(f'{k}={v}' for k, v in key.items())}\n\n{md}")
        table.to_csv(file_in(out, f"{stem}.csv"))
        file_in(out, f"{stem}.md").write_text(md + "\n")
    print(f"\n{legend}\nwritten to {out}/")


def cmd_mixtures(args):
    from .mixtures import LEGEND, mixture_runs, mixture_table

    records, problems, dirs, out = _records(args)
    runs = mixture_runs(records, problems)
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    if runs.empty:
        sys.exit(f"error: no complete mixture runs in {', '.join(map(str, dirs))}")
    tables = [({"p": p, "model": m}, mixture_table(g)) for (p, m), g in runs.groupby(["p", "model"])]
    _write_tables(tables, "mixtures", LEGEND, dirs, out)


def cmd_transfer(args):
    from .transfer import LEGEND, SCRATCH, transfer_runs, transfer_table

    records, problems, dirs, out = _records(args)
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    runs = transfer_runs(records)
    if not (runs.module != SCRATCH).any():
        sys.exit(f"error: no complete runs with init.* (transfer) in {', '.join(map(str, dirs))}")
    tables = [({"p": p, "model": m, "frac": f}, transfer_table(g))
              for (p, m, f), g in runs.groupby(["p", "model", "frac"])
              if (g.module != SCRATCH).any()]
    _write_tables(tables, "transfer", LEGEND, dirs, out)


def cmd_boundary(args):
    from tabulate import tabulate

    from .boundary import BoundaryError, plot, read, table

    sweep = _dirs(args)[0]
    try:
        doc = read(sweep)
    except BoundaryError as e:
        sys.exit(f"error: {e}")
    shared, rows = table(doc)
    out = Path(args.out) if args.out else sweep / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    ax = doc["axis"]
    print(f"{sweep}: boundary of {ax['name']} in [{ax['lo']}, {ax['hi']}] (resolution "
          f"{ax['resolution']}, grokking easier as it {'grows' if ax['direction'] == 'up' else 'shrinks'}), "
          f"{doc['k']} of {len(doc['seeds'])} seed(s) {doc['outcome_rule']} for a yes; "
          f"{doc['runs_spent']} run(s) in {doc['rounds']} round(s), {doc['reused']} reused")
    if shared:
        print(f"every cell: {' '.join(shared)}")
    shown = rows.astype(object).where(rows.notna(), None)
    print("\n" + tabulate(shown, headers="keys", tablefmt="github", showindex=False,
                          missingval="-"))
    name = f"boundary_{tag([sweep])}"
    rows.to_csv(file_in(out, f"{name}.csv"), index=False)
    plot(doc, file_in(out, f"{name}.png"))
    print(f"\nwritten to {out}/{name}.csv and .png")


def folders_parser(sub, name: str, fn):
    """A subcommand that reads sweep or run folders and writes its files under --out."""
    p = sub.add_parser(name)
    p.add_argument("dirs", nargs="*", help="sweep or run folders (default: the latest sweep)")
    p.add_argument("--outputs", default="outputs", help="where to look for the latest sweep")
    p.add_argument("--out", help="where to write files (default: <first dir>/analysis)")
    p.set_defaults(fn=fn)
    return p


def main(argv=None):
    # grok-analysis, the console script of an install, or `python -m analysis` in the checkout
    script = Path(sys.argv[0]).name
    prog = "python -m analysis" if script in ("__main__.py", "-c", "") else script
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn in (("grid", cmd_grid), ("exponents", cmd_exponents), ("plots", cmd_plots),
                     ("report", cmd_report)):
        p = folders_parser(sub, name, fn)
        if name in ("grid", "report"):
            p.add_argument("--rows", default="frac", metavar="KEY",
                           help="config key or group on the rows: frac (default), op, task, model, "
                                "optimizer.lr, ...")
            p.add_argument("--cols", metavar="KEY",
                           help="config key or group on the columns (default: op; frac with --rows op)")
        if name == "grid":
            p.add_argument("--cell", choices=("verdict", "grok-step"), default="verdict",
                           help="what a cell shows: the verdict (seed 002) or when it grokked")
        if name in ("plots", "report"):
            p.add_argument("--log-steps", action="store_true",
                           help="log step axis (default linear: the grokking jump is late)")
        if name not in ("plots", "report"):  # these need the local metrics files
            p.add_argument("--wandb", metavar="ENTITY/PROJECT",
                           help="read synced runs from W&B instead of folders")
            p.add_argument("--group", help="with --wandb: one sweep (W&B group = sweep id)")
    for name, fn in (("mixtures", cmd_mixtures), ("transfer", cmd_transfer),
                     ("boundary", cmd_boundary)):
        p = folders_parser(sub, name, fn)
    p = sub.add_parser("runs")  # writes only the file it is given: no --out
    p.add_argument("dirs", nargs="*", help="sweep or run folders (default: the latest sweep)")
    p.add_argument("--outputs", default="outputs", help="where to look for the latest sweep")
    p.set_defaults(fn=cmd_runs)
    to = p.add_mutually_exclusive_group()
    to.add_argument("--csv", metavar="FILE", help="every column of every run as CSV (- for stdout)")
    to.add_argument("--parquet", metavar="FILE", help="the same as Parquet (needs pyarrow: grok[parquet])")
    p = folders_parser(sub, "phases", cmd_phases)
    p.add_argument("--x", default="frac", metavar="KEY",
                   help="config key or group on the columns (default: frac)")
    p.add_argument("--y", default="op", metavar="KEY",
                   help="config key or group on the rows (default: op), e.g. optimizer.weight_decay")
    p = sub.add_parser("labels")
    p.add_argument("op")
    p.add_argument("--p", type=int, required=True)
    p.add_argument("--frac", type=float, default=0.3)
    p.add_argument("--splits", type=int, default=100)
    p.set_defaults(fn=cmd_labels)
    args = ap.parse_args(argv)
    if getattr(args, "wandb", None):
        args.api = wandb_api(args.wandb)
    args.fn(args)


if __name__ == "__main__":
    main()
