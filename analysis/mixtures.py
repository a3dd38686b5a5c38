"""Seed 002's mixture table: one column per mixture (its ops, in order), data fractions as rows,
one table per (p, model). A cell is `✓` where every op of the mixture grokked; otherwise each
op's best test accuracy (`x+y 100% · xy 45%`, `✓` for an op that grokked). Over seeds: `✓ 3/3`,
or how many seeds grokked all, then each op's median best accuracy over the seeds."""

import pandas as pd

from grok.verdict import GROKKED, NO_DELAY, NOT_GENERALISED

from .collate import cell_keys

LEGEND = ("✓ every op grokked · per op: ✓ grokked, = generalised without delay, n% best test acc "
          "(median over seeds) · k/n: seeds out of n where every op grokked")


def mixture_runs(records: list[dict], problems: list[str]) -> pd.DataFrame:
    """One row per mixture run: p, model, frac, seed, mixture, per_op (dict op -> verdict dict)."""
    rows = []
    for r in records:
        s, c = r["summary"], r["config"]
        if s.get("task") != "mixture":
            continue
        per_op = s.get("per_op")
        if not isinstance(per_op, dict) or not per_op or not all(
                isinstance(v, dict) and v.get("verdict") in (GROKKED, NO_DELAY, NOT_GENERALISED)
                and isinstance(v.get("best_test_acc"), (int, float)) for v in per_op.values()):
            problems.append(f"{r['run']}: incomplete summary (no per-op verdicts)")
            continue
        rows.append({**cell_keys(s, c),
                     "mixture": s.get("mixture") or "{" + ", ".join(per_op) + "}", "per_op": per_op,
                     "all_grokked": all(v["verdict"] == GROKKED for v in per_op.values()),
                     "run": r["run"]})
    return pd.DataFrame(rows, columns=["p", "model", "frac", "seed", "mixture", "per_op",
                                       "all_grokked", "run"])


def cell(group: pd.DataFrame) -> str:
    n, k = len(group), int(group.all_grokked.sum())
    if k == n:
        return "✓" if n == 1 else f"✓ {n}/{n}"
    parts = [f"✓ {k}/{n}"] if n > 1 else []
    for op in group.per_op.iloc[0]:
        verdicts = [p[op]["verdict"] for p in group.per_op if op in p]
        if all(v == GROKKED for v in verdicts):
            parts.append(f"{op} ✓")
        elif all(v == NO_DELAY for v in verdicts):
            parts.append(f"{op} =")
        else:
            acc = pd.Series([p[op]["best_test_acc"] for p in group.per_op if op in p]).median()
            parts.append(f"{op} {100 * acc:.0f}%")
    return " · ".join(parts)


def mixture_table(runs: pd.DataFrame) -> pd.DataFrame:
    """fracs x mixtures for runs of one (p, model)."""
    cells = {(frac, mix): cell(g) for (frac, mix), g in runs.groupby(["frac", "mixture"], sort=False)}
    fracs = sorted({f for f, _ in cells})
    mixes = list(dict.fromkeys(m for _, m in cells))
    table = pd.DataFrame([[cells.get((f, m), "") for m in mixes] for f in fracs],
                         index=pd.Index(fracs, name="frac"), columns=mixes)
    return table
