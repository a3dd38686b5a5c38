#!/usr/bin/env python
"""The boundary search (hydra/sweeper=boundary) against the full grid it stands in for.

    python bench/boundary.py [--ops x+y,x-y,...] [--p 17] [--seeds 2] [--steps 1500]
                             [--resolution 0.05] [--threshold 0.9] [--out DIR] [--quick]

Two sweeps of the same runs, launched as a user would (`launch.py -m`, the packed launcher, in a
temporary folder or --out): (a) the grid, every point of [--lo, --hi] at --resolution (17 points
for [0.1, 0.9] at 0.05) x ops x seeds, with the default sweeper; (b) the boundary search over the
same ops, axis `frac`, the same range, resolution, seeds, budget and train settings
(`hydra/sweeper=boundary`, its other settings at their defaults unless given: coarse 5, one new
point per round, k = all seeds, outcome "generalised").

Counted: runs trained, and run-steps (the sum of each run's `steps` in its summary.json: an early
stop counts the steps it ran). The grid's interval per op is what the search's own rule says of
the grid's outcomes: they are given to `grok.boundary.new_state(reuse=...)` with the same k and
read back with `grok.boundary.report`, so the k-of-S rule, the "generalised" outcome rule (a yes
is a run whose verdict is "grokked" or "generalised without delay", as the sweeper reads it) and
the interval [easiest no/mixed point harder than the hardest yes, hardest yes] are the search's.
The search's interval is its boundary.json's. A non-monotone grid (a "no" easier than the hardest
yes) is flagged: the search looks for the first crossing from the hard side and may stop at
another one. Run outcomes that differ between the two sweeps for the same (op, frac, seed) are
counted too (a run is a function of its config, so this should be 0).

Target (reported, not a pass condition): the same intervals for at most 30% of the grid's
run-steps. A benchmark: it prints figures and exits 0 whatever they are (1 on an error).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from grok import boundary  # noqa: E402
from hydra_plugins.grok_launchers.boundary_sweeper import summary_outcome  # noqa: E402

OPS = "x+y,x-y,xy,x2+y2,x2+xy+y2,x2-y"
TARGET = 0.30
# A small run on a shared 2-core CPU: p=17, a 32-wide one-layer model, AdamW lr 3e-3 (wd 1),
# 1500 steps, verdict at test accuracy 0.9 held (median) over 200 steps, stop 100 steps after it
# settles, one torch thread per process (2 threads on a busy 2-core machine were ~10x slower).
DEFAULTS = dict(ops=OPS, p=17, seeds=2, steps=1500, resolution="0.05", threshold=0.9,
                window=200, early_stop=100, eval_every=50, lr=3e-3, d_model=32, d_head=8,
                d_mlp=128, threads=1)
# --quick: the end-to-end test's tiny runs (p=11, 300 steps, threshold 0.6), 0.1 resolution.
QUICK = dict(ops="x+y,x2+y2", p=11, seeds=1, steps=300, resolution="0.1", threshold=0.6,
             window=2000, early_stop=None, eval_every=50, lr=1e-3, d_model=32, d_head=32,
             d_mlp=64, threads=1)


def run_overrides(args, ops) -> list[str]:
    """The overrides every run of both sweeps shares (the cells: op=...)."""
    return ["task=poly", f"op={','.join(ops)}", f"p={args.p}", f"model.d_model={args.d_model}",
            f"model.d_head={args.d_head}", f"model.d_mlp={args.d_mlp}",
            f"optimizer.lr={args.lr}", "logger=none", "measures=off",
            f"train.steps={args.steps}", f"train.eval_every={args.eval_every}",
            f"train.early_stop_after={'null' if args.early_stop is None else args.early_stop}",
            f"grok.threshold={args.threshold}", f"grok.window={args.window}",
            f"train.threads={args.threads}", "hydra/launcher=packed"]


def points(lo, hi, res) -> list[str]:
    lo, hi, res = Decimal(lo), Decimal(hi), Decimal(res)
    n = int((hi - lo) / res)
    return [format((lo + i * res).normalize(), "f") for i in range(n + 1)]


def launch(cwd: Path, args: list[str], log: Path) -> float:
    """launch.py -m ... in cwd, its output in `log`; the wall time in s. An error ends the bench."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, str(REPO / "launch.py"), "-m", *args], cwd=cwd,
                           env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = log.read_text()[-3000:]
        sys.exit(f"error: launch.py exited {r.returncode} (log: {log}):\n{tail}")
    return wall


def read_runs(sweep_dir: Path, rule: str) -> dict:
    """{folder name: (op as given, frac, seed, steps, outcome)} of every run folder of a sweep."""
    out = {}
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
        given = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        op = next(o.split("=", 1)[1] for o in given if o.startswith("op="))
        o = summary_outcome(s, rule) or boundary.FAILED
        out[d.name] = (op, s["frac"] if s else None, s["seed"] if s else None,
                       int(s["steps"]) if s else 0, o)
    return out


def op_of(cell) -> str:
    return next(o.split("=", 1)[1] for o in cell if o.startswith("op="))


def interval_text(row) -> str:
    lo, hi = row["interval"]
    text = f"{row['status']} [{'-' if lo is None else lo}, {'-' if hi is None else hi}]"
    return text + (" capped" if row.get("capped") else "")


def pattern(row, axis) -> str:
    """One character per point of the range, hard to easy: Y yes, n no, m mixed, ? unknown,
    . not tried."""
    by = {axis.index(p["value"]): p["outcome"] for p in row["points"]}
    ch = {"yes": "Y", "no": "n", "mixed": "m", "unknown": "?", "pending": "?"}
    return "".join(ch.get(by.get(i), ".") for i in range(axis.first, axis.last + 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 ops, p=11, 300 steps, 1 seed, resolution 0.1: a smoke test (< 2 min)")
    ap.add_argument("--ops", help=f"comma-separated ops of task=poly (default {OPS})")
    ap.add_argument("--p", type=int, help="modulus (default 17)")
    ap.add_argument("--seeds", type=int, help="seeds 0..S-1 per point, both sweeps (default 2)")
    ap.add_argument("--k", type=int, default=None,
                    help="seeds that must generalise for a yes (default: all, the sweeper's)")
    ap.add_argument("--steps", type=int, help="step budget of every run (default 1500)")
    ap.add_argument("--resolution", help="the grid's step and the search's resolution (default 0.05)")
    ap.add_argument("--lo", default="0.1", help="frac range, low end (default 0.1)")
    ap.add_argument("--hi", default="0.9", help="frac range, high end (default 0.9)")
    ap.add_argument("--threshold", type=float, help="grok.threshold (default 0.9)")
    ap.add_argument("--threads", type=int, help="train.threads of every run (default 1)")
    ap.add_argument("--coarse", default="5",
                    help="round 0's points of the search; comma-separated: one search each against "
                         "the one grid (default 5, the sweeper's default)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for both sweeps and their logs (kept); default: a temporary one")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    fracs = points(args.lo, args.hi, args.resolution)
    axis = boundary.Axis("frac", args.lo, args.hi, args.resolution, "up")
    seeds = list(range(args.seeds))
    k = len(seeds) if args.k is None else args.k
    rule = "generalised"  # the sweeper's default outcome rule

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_boundary_"))
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    grid_id, search_id = f"grid-{stamp}", f"search-{stamp}"
    common = run_overrides(args, ops)
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"boundary search vs grid: {len(ops)} ops ({', '.join(ops)}), task=poly p={args.p}, "
          f"frac in [{args.lo}, {args.hi}] at {args.resolution} ({len(fracs)} points), seeds "
          f"{seeds}, yes = at least {k} of {len(seeds)} generalised")
    print(f"runs: nanda model d_model {args.d_model} (d_head {args.d_head}, d_mlp {args.d_mlp}), "
          f"adamw lr {args.lr}, {args.steps} steps, eval every {args.eval_every}, threshold "
          f"{args.threshold} (window {args.window}), early stop after {args.early_stop}, "
          f"{args.threads} thread(s) a process, packed launcher; {os.cpu_count()} cpus{load}")
    print(f"folder: {out}")

    try:
        grid_args = [*common, f"frac={','.join(fracs)}", f"seed={','.join(map(str, seeds))}",
                     f"sweep_id={grid_id}"]
        print(f"\n(a) grid: {len(fracs) * len(ops) * len(seeds)} runs ...")
        t_grid = launch(out, grid_args, out / "grid.log")
        for coarse in [int(c) for c in str(args.coarse).split(",")]:
            sid = f"{search_id}-coarse{coarse}"
            search_args = [*common, "hydra/sweeper=boundary", f"hydra.sweeper.lo={args.lo}",
                           f"hydra.sweeper.hi={args.hi}",
                           f"hydra.sweeper.resolution={args.resolution}",
                           f"hydra.sweeper.seeds={len(seeds)}", f"hydra.sweeper.coarse={coarse}",
                           f"sweep_id={sid}"]
            if args.k is not None:
                search_args.append(f"hydra.sweeper.k={args.k}")
            print(f"(b) boundary search, coarse {coarse} ...")
            t_search = launch(out, search_args, out / f"search-coarse{coarse}.log")
            report(out / "outputs" / "sweeps", grid_id, sid, ops, seeds, k, axis, rule,
                   t_grid, t_search)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    return 0


def report(sweeps, grid_id, search_id, ops, seeds, k, axis, rule, t_grid, t_search):
    grid = read_runs(sweeps / grid_id, rule)
    doc = json.loads((sweeps / search_id / "boundary.json").read_text())
    search = read_runs(sweeps / search_id, rule)
    launched = {r["folder"] for r in doc["runs"]}
    missing = launched - set(search)
    if missing:
        sys.exit(f"error: {len(missing)} run(s) of the search have no folder, e.g. {min(missing)}")

    # the grid's outcomes, read by the search's rule: every point reused, no run launched
    reuse = {(op, f, s): o for op, f, s, _n, o in grid.values() if f is not None}
    state = boundary.new_state(axis, ops, seeds, k, max_runs=0, reuse=reuse)
    if state["reuse_ignored"]:
        print(f"note: {state['reuse_ignored']} grid run(s) off the axis' points, ignored")
    grid_rows = {op: row for op, row in zip(ops, boundary.report(state))}
    search_rows = {op_of(c): row for c, row in zip(doc["cells"], doc["rows"])}
    by_key = {(op, float(f), s): o for op, f, s, _n, o in grid.values() if f is not None}
    differ = [(op, f, s) for op, f, s, _n, o in search.values()
              if f is not None and by_key.get((op, float(f), s), o) != o]

    w = max(len(op) for op in ops)
    n_pts = axis.last - axis.first + 1
    pw = max(n_pts, 24)
    print(f"\n{'op':<{w}}  {'grid points, low to high':<{pw}}  {'grid interval':<24}"
          f"{'search interval':<24}{'agree':<7}{'runs':>5}  note")
    agree = 0
    for op in ops:
        g, s = grid_rows[op], search_rows[op]
        same = g["status"] == s["status"] and g["interval"] == s["interval"]
        agree += same
        notes = []
        if g["non_monotone"]:
            notes.append(f"grid non-monotone (no at {', '.join(map(str, g['against']))})")
        if s["non_monotone"]:
            notes.append(f"search non-monotone (no at {', '.join(map(str, s['against']))})")
        mixed = [p["value"] for p in g["points"] if p["outcome"] == boundary.MIXED
                 and g["yes_end"] is not None and p["value"] > g["yes_end"]]
        if mixed:  # not "against" (only a "no" is), but not monotone under k of S either
            notes.append(f"grid mixed above the yes end at {', '.join(map(str, mixed))}")
        if g["unknown_inside"]:
            notes.append(f"grid unknown at {g['unknown_inside']}")
        print(f"{op:<{w}}  {pattern(g, axis):<{pw}}  {interval_text(g):<24}{interval_text(s):<24}"
              f"{'yes' if same else 'NO':<7}{s['runs']:>5}  {'; '.join(notes)}")
    print(f"{'':<{w}}  (Y yes, n no, m mixed, ? unknown, . not tried; runs: the search's)")
    print("search points tried: " + "; ".join(f"{op} {pattern(search_rows[op], axis)}"
                                                for op in ops))

    runs_g, runs_s = len(grid), doc["runs_spent"]
    steps_g = sum(n for *_x, n, _o in grid.values())
    steps_s = sum(search[f][3] for f in launched)
    share = steps_s / steps_g if steps_g else float("nan")
    print(f"\nintervals: {agree} of {len(ops)} ops the same")
    print(f"runs: grid {runs_g}, search {runs_s} ({runs_s / runs_g:.1%} of the grid; "
          f"{doc['rounds']} rounds, worst case {doc['worst_case']})")
    print(f"run-steps: grid {steps_g}, search {steps_s} ({share:.1%} of the grid)")
    print(f"wall time (noisy, shared machine): grid {t_grid:.0f} s, search {t_search:.0f} s "
          f"({t_search / t_grid:.1%})")
    print(f"run outcomes that differ between the sweeps (same op, frac, seed): {len(differ)}"
          + (f": {differ[:5]}" if differ else ""))
    met = agree == len(ops) and share <= TARGET
    print(f"target: the same intervals for <= {TARGET:.0%} of the grid's run-steps: "
          f"{'met' if met else 'not met'} ({agree}/{len(ops)} intervals the same, {share:.1%})")


if __name__ == "__main__":
    raise SystemExit(main())
