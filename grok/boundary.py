"""The boundary search: per cell, the interval of a numeric axis where grokking starts.

Pure logic (no torch, no Hydra; see docs/boundary.md): a sweeper drives it round by round.

    state = new_state(Axis("frac", "0.1", "0.9", "0.05", "up"), cells, seeds=3, k=2)
    runs = next_round(state)                        # round 0: the coarse grid, every cell
    while runs:
        save_state(path, state)                     # before launching: a relaunch replays it
        outcomes = launch(runs)                     # {run: "grokked" | "not_grokked" | "failed"}
        runs = next_round(state, outcomes)          # records them, plans the next round
    report(state)                                   # per cell: status, interval, points

Rules:
- Points are integer multiples of `resolution` (kept as integers, `Decimal` arithmetic), given
  out as clean numbers (`0.35`, not `0.35000000000000003`; an int where the axis is integral)
  and stored in the state as decimal text, so a relaunch picks the very same points.
- `direction` "up": grokking gets easier as the value grows (frac, n_train); "down": as it
  shrinks. Below, "harder"/"easier" follow the direction.
- A point's outcome over its S seeds: "yes" where at least `k` grokked; "no" where none grokked
  and every seed is known; "mixed" where some grokked and fewer than `k` could have, counting
  unknown seeds as grokked; else "unknown". A seed is unknown while its run failed (retried once
  in the next round) and for good after a second failure. A failed run is never counted as "no".
- The interval of a cell is [easiest not-yes point harder than the hardest yes, hardest yes]:
  its "no" end is a "no" or a "mixed" point (the k-of-S rule was not met there), its "yes" end the
  hardest "yes". Unknown points never bound it; they are left inside it, listed, and not tried
  again (a new point is the nearest untried one).
- Round 0 is a coarse grid (`coarse` points spread over [lo, hi], both ends included) for every
  cell. Each further round retries the runs that failed once (a cell with a retry waits for it:
  no new points that round) and puts `points_per_round` new points per other open cell inside its
  open interval, spread evenly (1: bisection). A cell stops when its interval is at most
  `resolution` wide ("found"), when the hardest end of the range is a yes ("everywhere"), when
  the easiest end is tried and no point is a yes ("nowhere"), or when only points of unknown
  outcome are left inside its interval ("unknown": two failures there, the interval as it stands).
- `max_rounds` counts round 0 (1: round 0 alone, no retry) and rounds of retries alone;
  `max_runs` counts every run launched, retries included, reused runs not. A round that does not
  fit the runs left is cut, in its order (retries first, then each cell in the order given, a
  point with all its seeds or not at all). Cells still open when the search stops are reported
  as they stand, `capped`.
- Non-monotone: a cell with a "no" or "mixed" point easier than its hardest "yes" (a yes below
  a no, for "up"; mixed fails the k-of-S rule as no does) is flagged `non_monotone`, never
  smoothed over: its interval is still the one around its hardest yes (its first crossing,
  searched on as usual), and the no and mixed points easier than that yes are listed in `against`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Hashable, Iterable, Mapping, NamedTuple

from grok.record.files import dumps, write_text

GROKKED, NOT_GROKKED, FAILED = "grokked", "not_grokked", "failed"
YES, NO, MIXED, UNKNOWN, PENDING = "yes", "no", "mixed", "unknown", "pending"
FOUND, EVERYWHERE, NOWHERE, OPEN = "found", "everywhere", "nowhere", "open"
FORMAT = 1


def _dec(x) -> Decimal:
    """A number or decimal text as an exact Decimal (a float through its shortest repr)."""
    if isinstance(x, bool):
        raise ValueError(f"not a number: {x!r}")
    try:
        d = Decimal(str(x)) if not isinstance(x, Decimal) else x
    except InvalidOperation:
        raise ValueError(f"not a number: {x!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {x!r}")
    return d


def _text(d: Decimal) -> str:
    """Clean decimal text: 0.35, 2, 1e-05 becomes 0.00001."""
    t = format(d.normalize(), "f")
    return "0" if t in ("-0", "") else t


@dataclass(frozen=True)
class Axis:
    """The search axis: a config key, its range [lo, hi], the step its points lie on, and
    `direction` "up" (groks more easily as the value grows) or "down" (as it shrinks). lo, hi and
    resolution are numbers or decimal text; lo and hi must be multiples of resolution."""

    name: str
    lo: object
    hi: object
    resolution: object
    direction: str = "up"

    def __post_init__(self):
        res, lo, hi = _dec(self.resolution), _dec(self.lo), _dec(self.hi)
        if res <= 0:
            raise ValueError(f"{self.name}: resolution must be > 0, got {self.resolution}")
        if lo >= hi:
            raise ValueError(f"{self.name}: lo must be below hi, got [{self.lo}, {self.hi}]")
        for what, v in (("lo", lo), ("hi", hi)):
            if v % res != 0:
                raise ValueError(f"{self.name}: {what}={_text(v)} is not a multiple of the "
                                 f"resolution {_text(res)}")
        if self.direction not in ("up", "down"):
            raise ValueError(f"{self.name}: direction must be 'up' or 'down', got "
                             f"{self.direction!r}")
        # stored as clean text: equal axes compare equal however they were written
        for f, v in (("lo", lo), ("hi", hi), ("resolution", res)):
            object.__setattr__(self, f, _text(v))

    @property
    def first(self) -> int:
        return int(_dec(self.lo) / _dec(self.resolution))

    @property
    def last(self) -> int:
        return int(_dec(self.hi) / _dec(self.resolution))

    @property
    def integral(self) -> bool:
        return _dec(self.resolution) % 1 == 0

    def text(self, i: int) -> str:
        """Point i (i * resolution) as clean decimal text: folder names, overrides, the state."""
        return _text(i * _dec(self.resolution))

    def value(self, i: int):
        """Point i as the number a config gets: an int on an integral axis, else the float whose
        repr is the clean text (0.35)."""
        d = i * _dec(self.resolution)
        return int(d) if self.integral else float(_text(d))

    def index(self, value) -> int:
        """The point a value stands for; a value off the resolution's multiples is an error."""
        d, res = _dec(value), _dec(self.resolution)
        if d % res != 0:
            raise ValueError(f"{self.name}={value} is not a multiple of the resolution "
                             f"{self.resolution}")
        return int(d / res)

    def ease(self, i: int) -> int:
        """How easy point i is: grows with the value for "up", shrinks for "down"."""
        return i if self.direction == "up" else -i

    def as_dict(self) -> dict:
        return {"name": self.name, "lo": self.lo, "hi": self.hi, "resolution": self.resolution,
                "direction": self.direction}


class Run(NamedTuple):
    """One run to launch: the cell (as given), the axis value (a clean number) and the seed.
    A plain (cell, value, seed) tuple compares equal to it, so outcomes may be keyed by either."""

    cell: Hashable
    value: object
    seed: int


# ----------------------------------------------------------------------------- the state

def _freeze(x):
    """A cell read back from JSON: lists become tuples (hashable, equal to what was given)."""
    return tuple(_freeze(v) for v in x) if isinstance(x, list) else x


def _thaw(x):
    return [_thaw(v) for v in x] if isinstance(x, (tuple, list)) else x


def new_state(axis: Axis, cells: Iterable[Hashable], seeds=1, k: int | None = None, *,
              coarse: int = 5, points_per_round: int = 1, max_rounds: int = 10,
              max_runs: int | None = None, reuse: Mapping | None = None) -> dict:
    """A fresh search state (a plain JSON-able dict; nothing planned yet: call next_round).

    cells: opaque keys (a string, a number, or a tuple of those, e.g. override strings), in the
    order the rounds list them. seeds: a count S (seeds 0..S-1) or a list of seeds. k: how many
    of the S seeds must grok for a "yes" (default: all). coarse: points of round 0.
    reuse: outcomes of finished runs, {(cell, value, seed): outcome}, e.g. a grid sweep's; those on
    the axis' points, in the range, of a listed cell and seed count as done and are not run
    again; round 0 runs the seeds their points lack, besides the coarse grid (the others are
    ignored, their count kept in the state as `reuse_ignored`)."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    cells = [_freeze(_thaw(c)) for c in cells]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if not cells or len(set(cells)) != len(cells):
        raise ValueError("cells must be distinct and at least one")
    k = len(seeds) if k is None else int(k)
    if not 1 <= k <= len(seeds):
        raise ValueError(f"k must lie in [1, {len(seeds)}] (the seeds), got {k}")
    if coarse < 2 or points_per_round < 1 or max_rounds < 1:
        raise ValueError("coarse >= 2, points_per_round >= 1 and max_rounds >= 1 are needed")
    if max_runs is not None and max_runs < 0:
        raise ValueError(f"max_runs must be >= 0, got {max_runs}")
    state = {"format": FORMAT, "axis": axis.as_dict(), "seeds": seeds, "k": k,
             "coarse": coarse, "points_per_round": points_per_round, "max_rounds": max_rounds,
             "max_runs": max_runs, "cells": [_thaw(c) for c in cells], "reused": [],
             "reuse_ignored": 0, "rounds": []}
    if reuse:
        where = {c: n for n, c in enumerate(cells)}
        reused, ignored = {}, 0
        for key, outcome in reuse.items():
            cell, value, seed = key
            cell = _freeze(_thaw(cell))
            try:
                i = axis.index(value)
            except ValueError:
                i = None
            if cell not in where or seed not in seeds or i is None or not \
                    axis.first <= i <= axis.last:
                ignored += 1
                continue
            reused[(where[cell], i, seed)] = _outcome(outcome)
        state["reused"] = [[c, axis.text(i), s, o] for (c, i, s), o in sorted(reused.items())]
        state["reuse_ignored"] = ignored
    return state


def axis_of(state) -> Axis:
    return Axis(**state["axis"])


def cells_of(state) -> list:
    return [_freeze(c) for c in state["cells"]]


def save_state(path, state) -> None:
    """Write the state atomically (a reader sees the old file or the new one), strict JSON."""
    write_text(Path(path), dumps(state, indent=1) + "\n")


def load_state(path) -> dict:
    state = json.loads(Path(path).read_text())
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a boundary search state of format {FORMAT}")
    return state


def _outcome(o) -> str:
    if o is True or o == GROKKED:
        return GROKKED
    if o is False or o == NOT_GROKKED:
        return NOT_GROKKED
    if o is None or o == FAILED:
        return FAILED
    raise ValueError(f"a run's outcome is {GROKKED!r}, {NOT_GROKKED!r} or {FAILED!r} (or True, "
                     f"False, None), got {o!r}")


# ----------------------------------------------------------------------------- reading it

def _attempts(state, axis) -> dict:
    """{(cell no, point, seed): [outcome of each attempt, in order]}; a planned run without an
    outcome yet is not in it."""
    att = {}
    for c, v, s, o in state["reused"]:
        att.setdefault((c, axis.index(v), s), []).append(o)
    for rnd in state["rounds"]:
        for (c, v, s), o in zip(rnd["runs"], rnd["outcomes"]):
            if o is not None:
                att.setdefault((c, axis.index(v), s), []).append(o)
    return att


def _seed_outcome(attempts: list) -> str:
    last = attempts[-1]
    return UNKNOWN if last == FAILED else last


def point_outcome(outcomes: list[str], k: int, n_seeds: int) -> str:
    """A point's outcome from its seeds' outcomes ("grokked", "not_grokked", "unknown"; a seed
    not listed counts as unknown) under the k-of-S rule: yes, no, mixed or unknown."""
    g = sum(o == GROKKED for o in outcomes)
    u = n_seeds - g - sum(o == NOT_GROKKED for o in outcomes)
    if g >= k:
        return YES
    if g == 0 and u == 0:
        return NO
    if g >= 1 and g + u < k:
        return MIXED
    return UNKNOWN


def _points(state, axis, att) -> list[dict]:
    """Per cell no: {point: (outcome, grokked, known)} for every point tried or planned."""
    seeds, k = state["seeds"], state["k"]
    tried = [set() for _ in state["cells"]]
    for c, v, _s, _o in state["reused"]:
        tried[c].add(axis.index(v))
    for rnd in state["rounds"]:
        for c, v, _s in rnd["runs"]:
            tried[c].add(axis.index(v))
    out = []
    for c, pts in enumerate(tried):
        table = {}
        for i in sorted(pts):
            per_seed = [_seed_outcome(att[(c, i, s)]) if (c, i, s) in att else None
                        for s in seeds]
            known = [o for o in per_seed if o is not None]
            o = point_outcome(known, k, len(seeds))
            if o == UNKNOWN and None in per_seed:
                o = PENDING  # planned, not finished
            table[i] = (o,
                        sum(o == GROKKED for o in known),
                        sum(o in (GROKKED, NOT_GROKKED) for o in known))
        out.append(table)
    return out


def _cell(axis, table) -> dict:
    """The interval of one cell from its points {point: (outcome, ...)}, in ease terms."""
    e = axis.ease
    yes = [i for i, (o, *_) in table.items() if o == YES]
    hardest_yes = min(yes, key=e) if yes else None
    below = [i for i, (o, *_) in table.items() if o in (NO, MIXED)
             and (hardest_yes is None or e(i) < e(hardest_yes))]
    no_end = max(below, key=e) if below else None
    # not a yes, easier than a yes: "mixed" fails the k-of-S rule as "no" does
    against = sorted(i for i, (o, *_) in table.items()
                     if o in (NO, MIXED) and hardest_yes is not None and e(i) > e(hardest_yes))
    # the open interval in ease terms, the range's edges standing in for a missing end
    hardest, easiest = min(axis.first, axis.last, key=e), max(axis.first, axis.last, key=e)
    a = e(no_end) if no_end is not None else e(hardest) - 1
    b = e(hardest_yes) if hardest_yes is not None else e(easiest) + 1
    inside = [i for i in range(axis.first, axis.last + 1) if a < e(i) < b]
    untried = [i for i in inside if i not in table]
    if hardest_yes is not None and no_end is not None and b - a <= 1:
        status = FOUND
    elif hardest_yes == hardest and hardest_yes is not None:
        status = EVERYWHERE
    elif hardest_yes is None and no_end == easiest:
        status = NOWHERE
    elif not untried:
        status = UNKNOWN  # only points of unknown outcome (or none) are left inside
    else:
        status = OPEN
    return {"status": status, "no_end": no_end, "yes_end": hardest_yes, "a": a, "b": b,
            "untried": untried, "unknown_inside": [i for i in inside if i in table],
            "against": against}


def _spread(axis, cell, n: int) -> list[int]:
    """Up to n untried points inside the cell's open interval, spread evenly (n=1: the middle;
    a tried point of unknown outcome gives way to the nearest untried one, the harder first)."""
    e, a, b = axis.ease, cell["a"], cell["b"]
    free = sorted(cell["untried"], key=e)
    chosen = []
    for j in range(1, n + 1):
        if not free:
            break
        target = a * (n + 1) + j * (b - a)  # ease target, times (n + 1): integers only
        best = min(free, key=lambda i: (abs(e(i) * (n + 1) - target), e(i)))
        chosen.append(best)
        free.remove(best)
    return sorted(set(chosen))


def _coarse(axis, n: int) -> list[int]:
    lo, hi = axis.first, axis.last
    span = hi - lo
    n = min(n, span + 1)
    return sorted({lo + (2 * j * span + (n - 1)) // (2 * (n - 1)) for j in range(n)})


# ----------------------------------------------------------------------------- driving it

def _key(run, axis, where) -> tuple:
    cell, value, seed = run
    return where[_freeze(_thaw(cell))], axis.text(axis.index(value)), int(seed)


def record(state, outcomes: Mapping) -> dict:
    """Enter finished runs' outcomes ({Run or (cell, value, seed): "grokked" | "not_grokked" |
    "failed", or True/False/None}) into the latest round. A run already recorded is left as it
    was, and one only an earlier round holds is ignored (a relaunch may report finished runs
    again); a run no round planned is an error."""
    if not outcomes:
        return state
    if not state["rounds"]:
        raise ValueError("no round is planned: outcomes of earlier runs go in new_state(reuse=)")
    axis = axis_of(state)
    where = {c: n for n, c in enumerate(cells_of(state))}
    rnd = state["rounds"][-1]
    slot = {tuple(r): n for n, r in enumerate(rnd["runs"])}
    earlier = {tuple(r) for past in state["rounds"][:-1] for r in past["runs"]}
    earlier |= {(c, v, s) for c, v, s, _o in state["reused"]}
    for run, o in outcomes.items():
        key = _key(run, axis, where)
        o = _outcome(o)
        if key not in slot and key in earlier:
            continue
        if key not in slot:
            raise ValueError(f"{run} is not a run of round {len(state['rounds']) - 1}")
        if rnd["outcomes"][slot[key]] is None:
            rnd["outcomes"][slot[key]] = o
    return state


def _run(state, axis, cells, c, v, s) -> Run:
    return Run(cells[c], axis.value(axis.index(v)), s)


def runs_spent(state) -> int:
    """Runs launched so far (planned ones included; reused ones not)."""
    return sum(len(r["runs"]) for r in state["rounds"])


def next_round(state, outcomes: Mapping | None = None) -> list[Run]:
    """Record `outcomes` (see record), then give the runs to launch now: the latest round's runs
    still without an outcome, where there are some (a relaunch after a kill gets them again), else
    a new round, appended to the state (save it before launching). An empty list: the search is
    over. Deterministic: the same state gives the same runs."""
    record(state, outcomes or {})
    axis, cells = axis_of(state), cells_of(state)
    if state["rounds"]:
        rnd = state["rounds"][-1]
        waiting = [_run(state, axis, cells, *r) for r, o in zip(rnd["runs"], rnd["outcomes"])
                   if o is None]
        if waiting:
            return waiting
    planned = _plan(state, axis)
    if not planned:
        return []
    state["rounds"].append({"runs": planned, "outcomes": [None] * len(planned)})
    return [_run(state, axis, cells, *r) for r in planned]


def _plan(state, axis) -> list[list]:
    n_round = len(state["rounds"])
    if n_round >= state["max_rounds"]:
        return []
    left = None if state["max_runs"] is None else state["max_runs"] - runs_spent(state)
    seeds = state["seeds"]
    att = _attempts(state, axis)
    retries, groups = [], []
    if n_round == 0:
        grid = set(_coarse(axis, state["coarse"]))
        for c in range(len(state["cells"])):
            # the coarse grid, and the seeds a reused point lacks
            for i in sorted(grid | {axis.index(v) for c2, v, _s, _o in state["reused"] if c2 == c}):
                runs = [[c, axis.text(i), s] for s in seeds if (c, i, s) not in att]
                if runs:
                    groups.append(runs)
        # a reused run that failed once is retried in round 0
        retries = [[c, v, s] for c, v, s, o in state["reused"]
                   if o == FAILED and len(att[(c, axis.index(v), s)]) == 1]
    else:
        retries = [list(r) for r, o in zip(state["rounds"][-1]["runs"],
                                           state["rounds"][-1]["outcomes"])
                   if o == FAILED and att[(r[0], axis.index(r[1]), r[2])] == [FAILED]]
        waiting = {r[0] for r in retries}
        for c, table in enumerate(_points(state, axis, att)):
            cell = _cell(axis, table)
            if cell["status"] != OPEN or c in waiting:  # a retry first, then the search
                continue
            for i in _spread(axis, cell, state["points_per_round"]):
                groups.append([[c, axis.text(i), s] for s in seeds])
    planned = []
    for g in [[r] for r in retries] + groups:
        if left is not None and len(planned) + len(g) > left:
            break
        planned.extend(g)
    return planned


# ----------------------------------------------------------------------------- the report

def report(state) -> list[dict]:
    """Per cell, in order: {"cell", "status" (found, everywhere, nowhere, unknown, open),
    "capped" (open when the search stopped), "interval" [lower, upper] in ascending values (None:
    beyond the range, or not known), "no_end" and "yes_end" (the values bounding it), "non_monotone",
    "against" (the "no" and "mixed" values easier than the hardest yes), "unknown_inside", "points" ([{value,
    outcome, grokked, known, seeds}] ascending), "runs" (launched for the cell, retries included)}."""
    axis, cells = axis_of(state), cells_of(state)
    att = _attempts(state, axis)
    over = not state["rounds"] or _is_over(state)
    spent = [0] * len(cells)
    for rnd in state["rounds"]:
        for c, _v, _s in rnd["runs"]:
            spent[c] += 1
    out = []
    for c, table in enumerate(_points(state, axis, att)):
        cell = _cell(axis, table)
        ends = [cell["no_end"], cell["yes_end"]]
        if axis.direction == "down":
            ends.reverse()
        out.append({
            "cell": cells[c], "status": cell["status"],
            "capped": cell["status"] == OPEN and over and bool(state["rounds"]),
            "interval": [None if i is None else axis.value(i) for i in ends],
            "no_end": None if cell["no_end"] is None else axis.value(cell["no_end"]),
            "yes_end": None if cell["yes_end"] is None else axis.value(cell["yes_end"]),
            "non_monotone": bool(cell["against"]),
            "against": [axis.value(i) for i in cell["against"]],
            "unknown_inside": [axis.value(i) for i in cell["unknown_inside"]],
            "points": [{"value": axis.value(i), "outcome": o, "grokked": g, "known": n,
                        "seeds": len(state["seeds"])} for i, (o, g, n) in table.items()],
            "runs": spent[c]})
    return out


def _is_over(state) -> bool:
    rnd = state["rounds"][-1]
    if any(o is None for o in rnd["outcomes"]):
        return False
    return not _plan(state, axis_of(state))


def worst_case_runs(axis: Axis, n_cells: int, seeds=1, *, coarse: int = 5,
                    points_per_round: int = 1, max_rounds: int = 10,
                    max_runs: int | None = None) -> int:
    """The most runs a search can launch without failures (for a dry run): round 0's coarse grid
    for every cell, then per further round `points_per_round` points per cell while the widest
    gap of the grid can still be split, at most max_rounds - 1 rounds, capped by max_runs. Each
    failed run adds its one retry on top (at most as many again), within max_runs."""
    n_seeds = seeds if isinstance(seeds, int) else len(list(seeds))
    grid = _coarse(axis, coarse)
    total = len(grid) * n_cells * n_seeds
    gap = max(b - a for a, b in zip(grid, grid[1:]))
    m = points_per_round
    for _ in range(max_rounds - 1):
        if gap <= 1:
            break
        total += min(m, gap - 1) * n_cells * n_seeds
        gap = -(-gap // (m + 1))
    return total if max_runs is None else min(total, max_runs)


def worst_case(state) -> int:
    """worst_case_runs for a state's search (reused runs counted as if run)."""
    return worst_case_runs(axis_of(state), len(state["cells"]), state["seeds"],
                           coarse=state["coarse"], points_per_round=state["points_per_round"],
                           max_rounds=state["max_rounds"], max_runs=state["max_runs"])


def cell_labels(cells) -> tuple[list[str], list[list[str]]]:
    """Cells given as override lists, for a reader: (the overrides every cell shares, each cell's
    own), so a table shows `op=x-y` rather than the whole command line."""
    cells = [list(c) for c in cells]
    shared = [o for o in cells[0] if all(o in c for c in cells)] if cells else []
    return shared, [[o for o in c if o not in shared] for c in cells]
