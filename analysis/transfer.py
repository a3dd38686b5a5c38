"""Seed 002's transfer table (Figures 2, 9, 14; Table 6): rows are what a run started from, the
source op and module (`x+y embedding`, `xy transformer`, `random frozen embedding`), columns the
op it then learned; the first row is the run from scratch. One table per (p, model, frac).

A cell is the verdict over seeds (`✓`, `✓ 2/3`, `=`, or the best test accuracy), the median grok
step of the seeds that generalised (`@1200`), and, beside it, the from-scratch runs of the same
op, p, model, frac and seeds (`scratch @3400`, or their verdict where they did not generalise):
so a transfer that groks earlier than from scratch reads `✓ @1200 (scratch ✓ @3400)`."""

import pandas as pd

from grok.verdict import GROKKED, NO_DELAY

from .collate import cell_keys

SCRATCH = "from scratch"
LEGEND = ("✓ grokked · = generalised without delay · n% best test acc (did not generalise) · "
          "@step median grok step · (scratch ...) the from-scratch runs of the same op, frac and "
          "seeds · k/n: seeds out of n")
COLUMNS = ["p", "model", "frac", "seed", "op", "source", "module", "verdict", "grok_step",
           "best_test_acc", "init_from", "run"]


def transfer_runs(records: list[dict]) -> pd.DataFrame:
    """One row per single-op run (mixtures and other tasks are not in this table); `source` and
    `module` are empty strings for runs from scratch."""
    rows = []
    for r in records:
        s, c = r["summary"], r["config"]
        if s.get("task") == "mixture" or not s.get("op") or s.get("verdict") is None:
            continue
        module = s.get("init_module") or SCRATCH
        rows.append({**cell_keys(s, c),
                     "op": s["op"], "source": s.get("init_source_op") or "", "module": module,
                     "verdict": s["verdict"], "grok_step": s.get("grok_step"),
                     "best_test_acc": s.get("best_test_acc"), "init_from": s.get("init_from"),
                     "run": r["run"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def _verdicts(g: pd.DataFrame) -> str:
    n = len(g)
    ok = g[g.verdict.isin([GROKKED, NO_DELAY])]
    if len(ok) == 0:
        acc = 100 * g.best_test_acc.median()
        return f"{acc:.0f}%"
    sym = "✓" if (ok.verdict == GROKKED).all() else "="
    frac = "" if len(ok) == n == 1 else f" {len(ok)}/{n}"
    return f"{sym}{frac} @{ok.grok_step.median():.0f}"


def cell(g: pd.DataFrame, scratch: pd.DataFrame | None) -> str:
    own = _verdicts(g)
    if scratch is None:
        return own
    same = scratch[scratch.seed.isin(g.seed)]
    return f"{own} (scratch {_verdicts(same)})" if len(same) else f"{own} (no scratch run)"


def transfer_table(runs: pd.DataFrame) -> pd.DataFrame:
    """(source, module) x target op for runs of one (p, model, frac)."""
    scratch = runs[runs.module == SCRATCH]
    ops = list(dict.fromkeys(runs.op))
    rows = {}
    for (source, module), g in runs.groupby(["source", "module"], sort=False):
        label = SCRATCH if module == SCRATCH else f"{source} {module}".strip()
        rows[label] = {op: cell(part, None if module == SCRATCH else scratch[scratch.op == op])
                       for op, part in g.groupby("op", sort=False)}
    order = sorted(rows, key=lambda k: (k != SCRATCH, k))
    return pd.DataFrame([[rows[k].get(op, "") for op in ops] for k in order],
                        index=pd.Index(order, name="start"), columns=ops)
