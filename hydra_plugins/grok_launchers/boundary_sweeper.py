"""`hydra/sweeper=boundary`: per cell of the sweep axes, the interval of one numeric axis where
grokking starts, searched round by round (grok.boundary; docs/boundary.md).

The sweep's overrides (`op=x+y,x-y p=97 ...`, and an experiment's `hydra.sweeper.params`) make
the *cells*, expanded as the grid sweeper expands them; the search axis (`hydra.sweeper.axis`,
default `frac`) and `seed` are the sweeper's to set. Each round's runs, across all cells, go to
the configured launcher as one batch (the packed launcher trains them as packs). The state of the
search is written atomically to `boundary_state.json` in the sweep folder before each round is
launched, and `boundary.json` (the per-cell report) after each round, so a relaunch of the same
command with its `sweep_id=` replays the round it stopped in (finished runs are found in their
folders and not trained again) and goes on to the same points and intervals.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

import grok.boundary as boundary  # pure Python: no torch at Hydra's start-up
from grok.record.files import CONFIG, dumps, write_text
from grok.record.identity import changes, fingerprint, job_dirname
from grok.record.local import read_summary
from hydra_plugins.grok_launchers._batch import (
    BadInput,
    Checker,
    launcher_checker,
    refuse,
    with_sweep_id,
)
from hydra_plugins.grok_launchers.sweeper import expand

log = logging.getLogger(__name__)

STATE, REPORT = "boundary_state.json", "boundary.json"
# A run's verdicts (grok.verdict) that count as "grokked" for the search, by `outcome` rule.
YES_VERDICTS = {"generalised": ("grokked", "generalised without delay"), "grokked": ("grokked",)}
# Settings that define the search: a relaunch must give the same ones (the caps may change).
SEARCH_KEYS = ("axis", "seeds", "k", "coarse", "points_per_round")  # and the cells, as runs


@dataclass
class BoundarySweeperConf:
    _target_: str = "hydra_plugins.grok_launchers.boundary_sweeper.BoundarySweeper"
    axis: str = "frac"            # the search axis: any numeric key (task.n_train, optimizer.lr...)
    lo: Any = 0.1                 # its range, both ends multiples of `resolution`
    hi: Any = 0.9
    resolution: Any = 0.05        # points are multiples of it; a cell is found at this width
    direction: str = "up"         # up: grokking gets easier as the value grows; down: as it shrinks
    seeds: Any = 1                # seeds per point: a count S (seeds 0..S-1) or a list
    k: Optional[int] = None       # seeds that must grok for a "yes" (null: all of them)
    outcome: str = "generalised"  # which verdicts are a yes: generalised (with or without delay) | grokked
    coarse: int = 5               # points of round 0 over [lo, hi]
    points_per_round: int = 1     # new points per open cell per round (1: bisection)
    max_rounds: int = 10          # round 0 included
    max_runs: Optional[int] = None
    reuse: Optional[str] = None   # a grid sweep folder whose finished runs count, not retrained
    params: Optional[dict] = field(default_factory=dict)  # the cells' axes (an experiment's sweep)


ConfigStore.instance().store(group="hydra/sweeper", name="boundary", node=BoundarySweeperConf,
                             provider="grok")


class Search:
    """The search a sweeper config and the sweep's overrides describe: the axis, the cells, and
    the job of each run. Built and checked before anything is written (BadInput: one line)."""

    def __init__(self, sweeper: DictConfig | dict, config_loader, arguments: list[str]):
        s = dict(sweeper)
        for key in ("coarse", "points_per_round", "max_rounds", "max_runs", "k"):
            if s.get(key) is not None and (isinstance(s[key], bool) or not isinstance(s[key], int)):
                raise BadInput(f"hydra.sweeper.{key}={s[key]}: not a whole number")
        if s.get("outcome") not in YES_VERDICTS:
            raise BadInput(f"hydra.sweeper.outcome={s.get('outcome')}: not one of "
                           f"{', '.join(YES_VERDICTS)}")
        try:
            self.axis = boundary.Axis(str(s["axis"]), s["lo"], s["hi"], s["resolution"],
                                      str(s["direction"]))
        except ValueError as e:
            raise BadInput(f"hydra.sweeper: {e}") from None
        seeds = s.get("seeds")
        seeds = OmegaConf.to_container(seeds) if OmegaConf.is_config(seeds) else seeds
        if isinstance(seeds, bool) or not (isinstance(seeds, int) or (
                isinstance(seeds, list) and all(isinstance(x, int) for x in seeds))):
            raise BadInput(f"hydra.sweeper.seeds={seeds}: a count or a list of whole numbers")
        jobs = [j for b in expand(config_loader, s.get("params") or {}, arguments) for j in b]
        for job in jobs:
            for o in job:
                key = o.split("=", 1)[0].lstrip("+~")
                if key in (self.axis.name, "seed"):
                    raise BadInput(f"{o}: the boundary sweeper sets {key} (its range: "
                                   f"hydra.sweeper.{'lo/hi' if key != 'seed' else 'seeds'})")
        # sweep_id is the launch's, not the cell's: the launchers add it to every job
        self.cells = [tuple(o for o in job if o.split("=", 1)[0].lstrip("+") != "sweep_id")
                      for job in jobs]
        self.rule, self.settings = s["outcome"], s
        try:
            self.fresh = boundary.new_state(
                self.axis, self.cells, seeds, s.get("k"), coarse=s["coarse"],
                points_per_round=s["points_per_round"], max_rounds=s["max_rounds"],
                max_runs=s.get("max_runs"))
        except ValueError as e:
            raise BadInput(f"hydra.sweeper: {e}") from None

    def job(self, run) -> list[str]:
        """A run's overrides: its cell's, then the search axis' value and the seed."""
        return [*run.cell, f"{self.axis.name}={run.value}", f"seed={run.seed}"]

    def round_zero(self) -> list[list[str]]:
        return [self.job(r) for r in boundary.next_round(dict(self.fresh, rounds=[]))]

    def worst_case(self) -> int:
        return boundary.worst_case(self.fresh)


def outcome(ret, rule: str) -> str:
    """A job's outcome for the search: grokked, not_grokked, or failed (never counted as no)."""
    if ret.status != JobStatus.COMPLETED:
        return "failed"
    s = ret.return_value
    if not isinstance(s, dict) or s.get("status") != "complete":
        return "failed"
    return "grokked" if s.get("verdict") in YES_VERDICTS[rule] else "not_grokked"


def summary_outcome(summary: dict | None, rule: str) -> str | None:
    if not summary or summary.get("status") != "complete":
        return None
    return "grokked" if summary.get("verdict") in YES_VERDICTS[rule] else "not_grokked"


def reused_runs(grid_dir: Path, search: Search, checker: Checker) -> tuple[dict, dict]:
    """Outcomes of a grid sweep's finished runs that are runs of this search, by identity (their
    folder's config, compared as a relaunch compares it) and with the same budget:
    ({(cell, value, seed): outcome}, {the same keys: folder})."""

    axis, found = search.axis, {}
    for d in sorted(p for p in grid_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:  # the folder's config: data (safe YAML), its budget and its identity
            stored = OmegaConf.load(d / CONFIG)
            budget, ident = OmegaConf.select(stored, "train.steps"), fingerprint(stored)
        except Exception:  # noqa: BLE001 - no readable config: not a run to reuse
            continue
        o = summary_outcome(read_summary(d), search.rule)
        if o is None:
            continue
        try:
            i = axis.index(_get(ident, axis.name))
        except (ValueError, TypeError):
            continue
        found.setdefault((i, ident.get("seed")), []).append((ident, budget, o, d))
    seeds = search.fresh["seeds"]
    outcomes, folders = {}, {}
    for cell in search.cells:
        for (i, seed), entries in sorted(found.items(), key=lambda x: (x[0][0], str(x[0][1]))):
            if seed not in seeds:
                continue
            key = (cell, axis.value(i), seed)
            cfg = checker.config(search.job(_Run(*key)))
            mine = fingerprint(cfg)
            for ident, budget, o, d in entries:
                if budget == cfg.train.steps and not changes(ident, mine):
                    outcomes[key], folders[key] = o, str(d)
                    break
    return outcomes, folders


class _Run:
    def __init__(self, cell, value, seed):
        self.cell, self.value, self.seed = cell, value, seed


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


class BoundarySweeper(Sweeper):
    """Finds, per cell, where grokking starts on the search axis; see the module's docstring."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        settings = OmegaConf.select(self.config, "hydra.sweeper")
        try:
            search = Search(settings, self.hydra_context.config_loader, arguments)
        except BadInput as e:
            refuse(str(e))
        if self.config.get("optimized_metric") is not None:
            refuse(f"optimized_metric={self.config.optimized_metric}: the boundary sweeper reads "
                   f"each run's verdict; leave optimized_metric null")
        with open_dict(self.config):
            self.config.sweep_id = str(self.config.sweep_id)  # multirun.yaml: this launch's id
        # Round 0 (both ends of the range for every cell and seed) is checked before anything is
        # written; a later round's points lie between them. (The launcher checks each round's
        # batch again, and the launch's report lists those: the runs the search launched.)
        try:
            launcher_checker(self.hydra_context, self.config).check_all(
                with_sweep_id(self.config, search.round_zero()))
        except BadInput as e:
            refuse(str(e))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        state = self._state(sweep_dir, search)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("boundary search over %s in [%s, %s] (resolution %s, %s), %d cell(s), %s: at "
                 "most %d runs", search.axis.name, search.axis.value(search.axis.first),
                 search.axis.value(search.axis.last), settings.resolution, search.axis.direction,
                 len(search.cells), _seeds_text(state), boundary.worst_case(state))
        returns, runs = [], boundary.next_round(state)
        while runs:
            boundary.save_state(sweep_dir / STATE, state)  # before launching: a relaunch replays it
            n = len(state["rounds"]) - 1
            log.info("round %d: %d run(s) in %d cell(s)", n, len(runs), len({r.cell for r in runs}))
            results = self.launcher.launch([search.job(r) for r in runs],
                                           initial_job_idx=boundary.runs_spent(state) - len(runs))
            returns.append(results)
            runs = boundary.next_round(state, {r: outcome(ret, search.rule)
                                               for r, ret in zip(runs, results)})
            write_report(sweep_dir, state, search, self.config.sweep_id)
        boundary.save_state(sweep_dir / STATE, state)
        write_report(sweep_dir, state, search, self.config.sweep_id)
        _, labels = boundary.cell_labels(state["cells"])
        for row, label in zip(boundary.report(state), labels):
            log.info("%s: %s %s", " ".join(label) or "(the one cell)", row["status"],
                     _interval_text(row))
        return returns

    def _state(self, sweep_dir: Path, search: Search) -> dict:
        """The search state: the sweep folder's (a relaunch; the caps are this command's), else a
        fresh one, seeded by `reuse`'s finished runs."""

        path = sweep_dir / STATE
        if path.exists():
            try:
                state = boundary.load_state(path)
            except ValueError as e:
                refuse(f"{path}: {e}")
            fresh = search.fresh
            differ = [k for k in SEARCH_KEYS if state.get(k) != fresh[k]]
            if [job_dirname(c) for c in state.get("cells", [])] != [job_dirname(c) for c in
                                                                    fresh["cells"]]:
                differ.append("cells")  # compared as runs: by the overrides that make them
            if differ:
                refuse(f"{path} holds a boundary search with other {', '.join(differ)}: relaunch "
                       f"with its settings, or use another sweep_id")
            # this command's caps, and its cells' overrides (a logger or budget may change)
            for k in ("max_rounds", "max_runs", "cells"):
                state[k] = fresh[k]
            return state
        reuse = search.settings.get("reuse")
        if not reuse:
            return search.fresh
        grid = Path(str(reuse))
        if not grid.is_dir():
            refuse(f"hydra.sweeper.reuse={reuse}: no such sweep folder")
        outcomes, folders = reused_runs(grid, search,
                                        launcher_checker(self.hydra_context, self.config))
        state = boundary.new_state(search.axis, search.cells, search.fresh["seeds"],
                                   search.fresh["k"], coarse=search.fresh["coarse"],
                                   points_per_round=search.fresh["points_per_round"],
                                   max_rounds=search.fresh["max_rounds"],
                                   max_runs=search.fresh["max_runs"], reuse=outcomes)
        state["reused_from"] = {str(grid): sorted(set(folders.values()))}
        log.info("reusing %d finished run(s) of %s", len(outcomes), grid)
        return state


def _seeds_text(state) -> str:
    return f"{state['k']} of {len(state['seeds'])} seed(s) {state['seeds']} for a yes"


def _interval_text(row: dict) -> str:
    lo, hi = row["interval"]
    return f"[{'-' if lo is None else lo}, {'-' if hi is None else hi}]" + (
        " (non-monotone)" if row["non_monotone"] else "") + (" (capped)" if row["capped"] else "")


def write_report(sweep_dir: Path, state: dict, search: Search, sweep_id: str) -> None:
    """boundary.json: what `python -m analysis boundary` reads (plain JSON data)."""

    runs = []
    for n, rnd in enumerate(state["rounds"]):
        for (c, v, s), o in zip(rnd["runs"], rnd["outcomes"]):
            job = [*state["cells"][c], f"{search.axis.name}={v}", f"seed={s}"]
            runs.append({"round": n, "cell": c, "value": v, "seed": s, "outcome": o,
                         "folder": job_dirname(job)})
    doc = {"format": 1, "axis": state["axis"], "seeds": state["seeds"], "k": state["k"],
           "outcome_rule": search.rule, "rounds": len(state["rounds"]),
           "runs_spent": boundary.runs_spent(state), "worst_case": boundary.worst_case(state),
           "reused": len(state.get("reused", [])), "reused_from": state.get("reused_from", {}),
           "sweep_id": str(sweep_id), "cells": [list(c) for c in state["cells"]],
           "rows": boundary.report(state), "runs": runs}
    write_text(sweep_dir / REPORT, dumps(doc, indent=1) + "\n")
