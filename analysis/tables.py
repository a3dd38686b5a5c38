"""The grok/no-grok tables of the seeds, from the tidy runs DataFrame of analysis.collate.

Grid (seed 002, Table 5): ops as columns grouped by kind, data fractions as rows; a cell is a
check mark where the op grokked, else the best test accuracy in percent. Seeds are aggregated in
the cell ("✓ 3/3", "✓ 2/3", or the mean best accuracy with its spread).
"""

import math

import pandas as pd
from tabulate import tabulate

from analysis.opstats import KIND_ORDER, exponent_pair, label_uniformity, op_kind
from grok.ops import parse_op
from grok.verdict import GROKKED, NO_DELAY

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


def grokked_share(group: pd.DataFrame) -> float:
    """For the heatmap: fraction of seeds that grokked or generalised, else best accuracy / 2."""
    ok = group.verdict.isin([GROKKED, NO_DELAY]).mean()
    return ok if ok > 0 else 0.5 * group.best_test_acc.mean()


def _kinds(ops) -> dict:
    return {op: op_kind(parse_op(op)) for op in ops}


def grid(runs: pd.DataFrame, rows: str = "frac", agg=cell) -> pd.DataFrame:
    """ops x fracs table, one cell per (op, frac) over seeds (and over p, model, optimizer if the
    runs mix them: pass a filtered frame to separate those). `rows="op"` transposes."""
    if runs.empty:
        return pd.DataFrame()
    kinds = _kinds(runs.op.unique())
    order = sorted(kinds, key=lambda op: (KIND_ORDER.index(kinds[op]), op))
    pretty = runs.groupby("op").op_pretty.first()
    table = runs.groupby(["frac", "op"])[list(runs.columns)].apply(agg).unstack("op")
    table = table.reindex(columns=order)
    table.columns = pd.MultiIndex.from_tuples([(kinds[op], pretty[op]) for op in order],
                                              names=["kind", "op"])
    table.index = [f"{f:g}" for f in table.index]
    table.index.name = "frac"
    return table.T if rows == "op" else table


def _group_starts(kinds) -> list[str]:
    """Each kind named once, at the first op of its group, as seed 002's grouped header."""
    return [k if i == 0 or kinds[i - 1] != k else "" for i, k in enumerate(kinds)]


def to_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no complete runs)"
    table = table.astype(object).where(table.notna(), "")  # ops not run at a frac: blank cell
    if isinstance(table.columns, pd.MultiIndex):   # fracs as rows, (kind, op) as columns
        kinds, ops = zip(*table.columns)
        headers = ["frac", *ops]
        body = [["", *_group_starts(list(kinds))]]
        body += [[idx, *vals] for idx, vals in zip(table.index, table.values.tolist())]
    else:                                          # (kind, op) as rows, fracs as columns
        kinds, ops = zip(*table.index)
        headers = ["kind", "op", *table.columns]
        body = [[k, op, *vals] for k, op, vals in
                zip(_group_starts(list(kinds)), ops, table.values.tolist())]
    return tabulate(body, headers=headers, tablefmt="github", stralign="center",
                    disable_numparse=True)


def exponent_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed 004, Table 1: x^a+y^b runs by (a, b, p): verdict, grok step, and how uniform the
    op's labels are over all p*p pairs (seed 004 links grokking to it)."""
    out = []
    for (op, p), group in runs.groupby(["op", "p"]):
        parsed = parse_op(op)
        ab = exponent_pair(parsed)
        if ab is None:
            continue
        u = label_uniformity(parsed, int(p))
        grokked = group.verdict == GROKKED
        out.append({"a": ab[0], "b": ab[1], "p": int(p), "runs": len(group),
                    "grokked": f"{int(grokked.sum())}/{len(group)}",
                    "verdict": group.verdict.mode().iloc[0],
                    "grok_step": group.grok_step[grokked].median() if grokked.any() else math.nan,
                    "best_test_acc": group.best_test_acc.max(),
                    "n_labels": u["n_labels"], "label_entropy_ratio": u["label_entropy_ratio"]})
    cols = ["a", "b", "p", "runs", "grokked", "verdict", "grok_step", "best_test_acc",
            "n_labels", "label_entropy_ratio"]
    return pd.DataFrame(out, columns=cols).sort_values(["p", "a", "b"]).reset_index(drop=True)
