"""The grok/no-grok tables of the seeds, from the tidy runs DataFrame of analysis.collate.

Grid (seed 002, Table 5): ops as columns grouped by kind, data fractions as rows; a cell is a
check mark where the op grokked, else the best test accuracy in percent. Seeds are aggregated in
the cell ("✓ 3/3", "✓ 2/3", or the mean best accuracy with its spread).
"""

import math

import pandas as pd
from tabulate import tabulate

from grok.opkinds import KIND_ORDER, op_kind
from grok.ops import parse_op
from grok.verdict import GROKKED, NO_DELAY

from .opstats import exponent_pair, label_uniformity
from .pooling import PoolError, axis_values, pools

LEGEND = ("✓ grokked (test acc held >= threshold, well after memorising) · "
          "= generalised without delay · n% best test acc (did not generalise) · "
          "k/n: seeds out of n")


def cell(group: pd.DataFrame) -> str:
    n = len(group)
    grokked = int((group.verdict == GROKKED).sum())
    no_delay = int((group.verdict == NO_DELAY).sum())
    if grokked == n:
        return "✓" if n == 1 else f"✓ {n}/{n}"
    if no_delay == n:
        return "=" if n == 1 else f"= {n}/{n}"
    if grokked or no_delay:
        parts = [f"✓ {grokked}/{n}"] if grokked else []
        return " ".join(parts + ([f"= {no_delay}/{n}"] if no_delay else []))
    acc = 100 * group.best_test_acc
    if n == 1:
        return f"{acc.iloc[0]:.0f}%"
    return f"{acc.mean():.0f}±{acc.std(ddof=0):.0f}%"


def grok_step_cell(group: pd.DataFrame) -> str:
    """When it grokked: median grok step over the seeds that generalised (with how many), else
    the best test accuracy as in `cell`."""
    ok = group[group.verdict.isin([GROKKED, NO_DELAY])]
    if ok.empty:
        return cell(group)
    step = f"{ok.grok_step.median():.0f}"
    return step if len(group) == 1 else f"{step} ({len(ok)}/{len(group)})"


def generalised_share(group: pd.DataFrame) -> float:
    """For the heatmap's colour: the share of seeds that grokked or generalised without delay
    (one quantity; the best accuracy of a cell where none did is its text, not its colour)."""
    return float(group.verdict.isin([GROKKED, NO_DELAY]).mean())


OTHER_KIND = "other tasks"  # the op axis of a run of grok/tasks' other tasks: its task name


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def _label(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "(unset)"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def axis_labels(runs: pd.DataFrame, axis: str):
    """(each run's label on the axis, the labels in table order, {label: kind} for the op axis)."""
    values = axis_values(runs, axis)
    labels = values.map(_label)
    if axis != "op":
        order = [_label(v) for v in sorted(dict.fromkeys(values.dropna()), key=_sort_key)]
        return labels, order + (["(unset)"] if values.isna().any() else []), None
    kinds = {}
    for label, op, task in zip(labels, runs.op, runs.task):
        kinds[label] = op_kind(parse_op(op)) if isinstance(op, str) else OTHER_KIND
    rank = {k: i for i, k in enumerate((*KIND_ORDER, OTHER_KIND))}
    order = sorted(kinds, key=lambda op: (rank[kinds[op]], op))
    return labels, order, kinds


def grid(runs: pd.DataFrame, rows: str = "frac", agg=cell, cols: str = "op") -> pd.DataFrame:
    """A rows x cols table (any config key or group on either axis: frac, op, task, model,
    optimizer.lr, ...), one cell per pair of values over the runs given (pass one pool of
    analysis.pooling.pools: runs that differ in the seed alone). Default: fracs x ops (seed 002),
    ops grouped by kind as a (kind, op) column index; `rows="op"` alone transposes it."""
    if rows == cols == "op":
        cols = "frac"
    if rows == cols:
        raise PoolError(f"rows and columns are both {rows!r}; choose two different keys")
    if runs.empty:
        return pd.DataFrame()
    rl, row_order, row_kinds = axis_labels(runs, rows)
    cl, col_order, col_kinds = axis_labels(runs, cols)
    table = runs.groupby([rl.rename("_rows"), cl.rename("_cols")])[list(runs.columns)].apply(agg)
    table = table.unstack("_cols").reindex(index=row_order, columns=col_order)
    for kinds, attr, order, name in ((col_kinds, "columns", col_order, cols),
                                     (row_kinds, "index", row_order, rows)):
        if kinds is not None:
            setattr(table, attr, pd.MultiIndex.from_tuples([(kinds[v], v) for v in order],
                                                           names=["kind", name]))
        else:
            getattr(table, attr).name = name
    return table


def cell_numbers(runs: pd.DataFrame, rows: str = "frac", cols: str = "op") -> pd.DataFrame:
    """The grid as numbers, a row per cell (the CSV; `grid` is for reading): the two axis values
    (an op as its pretty form, with its `kind`), the seeds, how many grokked or generalised
    without delay, that share, the median grok step of those, the best test accuracy."""
    if rows == cols == "op":
        cols = "frac"
    if rows == cols:
        raise PoolError(f"rows and columns are both {rows!r}; choose two different keys")
    axes = {rows: axis_values(runs, rows), cols: axis_values(runs, cols)}
    out = []
    for (r, c), g in runs.groupby([axes[rows], axes[cols]], dropna=False, sort=False):
        ok = g.verdict.isin([GROKKED, NO_DELAY])
        steps = g.grok_step[ok].dropna() if "grok_step" in g else pd.Series(dtype=float)
        row = {rows: r, cols: c}
        for axis in (rows, cols):
            if axis == "op":
                op = g.op.iloc[0]
                row["kind"] = op_kind(parse_op(op)) if isinstance(op, str) else OTHER_KIND
        out.append({**row, "n_seeds": len(g), "n_grokked": int((g.verdict == GROKKED).sum()),
                    "n_no_delay": int((g.verdict == NO_DELAY).sum()), "share_generalised": ok.mean(),
                    "median_grok_step": steps.median() if len(steps) else math.nan,
                    "best_test_acc": g.best_test_acc.max(), "mean_best_test_acc": g.best_test_acc.mean()})
    table = pd.DataFrame(out)
    return table.sort_values([rows, cols], key=lambda s: s.map(_sort_key), ignore_index=True)


def to_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no complete runs)"
    table = table.astype(object).where(table.notna(), "")  # ops not run at a frac: blank cell
    if isinstance(table.columns, pd.MultiIndex):   # fracs as rows, (kind, op) as columns
        kinds, ops = zip(*table.columns)
        headers = [table.index.name or "", *ops]
        # Markdown has no header cell spanning columns: every op's kind under it, so a kind
        # never reads as the label of its group's first op alone.
        body = [["kind", *kinds]]
        body += [[idx, *vals] for idx, vals in zip(table.index, table.values.tolist())]
    elif isinstance(table.index, pd.MultiIndex):   # (kind, op) as rows, fracs as columns
        kinds, ops = zip(*table.index)
        headers = ["kind", "op", *table.columns]
        body = [[k, op, *vals] for k, op, vals in zip(kinds, ops, table.values.tolist())]
    else:                                          # any other two keys
        headers = [f"{table.index.name} \\ {table.columns.name}", *map(str, table.columns)]
        body = [[idx, *vals] for idx, vals in zip(table.index, table.values.tolist())]
    return tabulate(body, headers=headers, tablefmt="github", stralign="center",
                    disable_numparse=True)


def exponent_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed 004, Table 1: x^a+y^b runs by (a, b, p): verdict, grok step, and how uniform the
    op's labels are over all p*p pairs (seed 004 links grokking to it). A row pools seeds only:
    each frac is its own row, and runs that differ in any other key (analysis.pooling) get
    their own rows too, named in the `config` column."""
    out = []
    if "config" not in runs:
        runs = runs.assign(config=[{}] * len(runs))
    if "frac" not in runs:
        runs = runs.assign(frac=math.nan)
    if "task" not in runs:
        runs = runs.assign(task="poly")
    for label, pool in pools(runs, axes=("op", "p", "frac")):
        for (op, p, frac), group in pool.groupby(["op", "p", "frac"], dropna=False):
            if not isinstance(op, str):
                continue  # a mixture or another task: no op, so no exponents
            parsed = parse_op(op)
            ab = exponent_pair(parsed)
            if ab is None:
                continue
            u = label_uniformity(parsed, int(p))
            grokked = group.verdict == GROKKED
            out.append({"a": ab[0], "b": ab[1], "p": int(p), "frac": frac, "config": label,
                        "runs": len(group), "grokked": f"{int(grokked.sum())}/{len(group)}",
                        "verdict": group.verdict.mode().iloc[0],
                        "grok_step": group.grok_step[grokked].median() if grokked.any() else math.nan,
                        "best_test_acc": group.best_test_acc.max(),
                        "n_labels": u["n_labels"], "label_entropy_ratio": u["label_entropy_ratio"]})
    cols = ["a", "b", "p", "frac", "config", "runs", "grokked", "verdict", "grok_step", "best_test_acc",
            "n_labels", "label_entropy_ratio"]
    table = pd.DataFrame(out, columns=cols).sort_values(["config", "p", "frac", "a", "b"])
    table = table.reset_index(drop=True)
    return table if (table.config != "").any() else table.drop(columns="config")
