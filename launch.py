#!/usr/bin/env python
"""Run one grokking experiment or a sweep: `python launch.py [-m] [--dry-run] [overrides...]`.

Before Hydra creates any folder, every job of the sweep is composed and checked, so bad input
costs one line on stderr and exit status 2, and leaves nothing half-written on disk.
"""

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from grok.record.identity import fingerprint, job_dirname  # noqa: E402
from grok.record.local import hydra_files, one_line, record_failure  # noqa: E402
from grok.record.lock import FolderError  # noqa: E402
from grok.record.status import SweepReport, sweep_status  # noqa: E402
from hydra_plugins.grok_launchers._batch import (  # noqa: E402
    BadInput,
    cannot_submit,
    check_launch,
    checked_jobs,
    is_hydra,
    is_remote,
    objective,
)
from hydra_plugins.grok_launchers._batch import one_line as hydra_one_line  # noqa: E402
from hydra_plugins.grok_launchers.boundary_sweeper import BoundarySweeper, Search  # noqa: E402
from hydra_plugins.grok_launchers.compose import CONF  # noqa: E402
from hydra_plugins.grok_launchers.compose import checker as _checker  # noqa: E402
from hydra_plugins.grok_launchers.compose import hydra_compose as _hydra  # noqa: E402
from hydra_plugins.grok_launchers.sweeper import GrokSweeper, expand  # noqa: E402

log = logging.getLogger("grok")


def parse_flags(argv: list[str]) -> argparse.Namespace:
    """The command line as Hydra reads it (its documented flags, hydra.cc "Command line flags"),
    plus --dry-run: `overrides` are the positional arguments."""
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--help/-h", "--hydra-help", "--resolve", "--run/-r", "--multirun/-m",
                 "--shell-completion/-sc", "--dry-run"):
        p.add_argument(*flag.split("/"), action="store_true")
    for flag in ("--cfg/-c", "--package/-p", "--config-path/-cp", "--config-name/-cn",
                 "--config-dir/-cd", "--experimental-rerun"):
        p.add_argument(*flag.split("/"))
    p.add_argument("--info", "-i", nargs="?", const="all")
    p.add_argument("--version", action="store_true")
    p.add_argument("overrides", nargs="*")
    args, _ = p.parse_known_args(argv)
    # Flags that print something and run no job: Hydra answers them itself.
    args.asks = bool(args.help or args.hydra_help or args.cfg or args.info or args.version
                     or args.shell_completion or args.experimental_rerun)
    return args


def plan(argv: list[str], notes: list | None = None) -> tuple[list[list[str]], bool, bool]:
    """The override list of every job this command line launches, as the grok sweeper expands
    it (hydra/sweeper=grok: the sweep params of the config, an experiment's
    `hydra.sweeper.params`, then the command line); hydra.* overrides left out. Also whether this
    is a multirun, and whether its jobs run on other nodes (SLURM). A boundary sweep's jobs are
    those of its round 0; `notes`, if given, receives a line on the runs it may need in all."""
    args = parse_flags(argv)
    with _hydra() as loader:
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(args.overrides)
        task = [o.input_line for o in parsed if not is_hydra(o)]
        if not args.multirun:
            return [task], False, False
        # The config every job shares (Hydra's multirun composes it without the sweeps): a bad
        # launcher or sweeper name fails here, up front.
        cfg = compose("config", overrides=[o.input_line for o in parsed if not o.is_sweep_override()],
                      return_hydra_config=True)
        sweeper = str(cfg.hydra.sweeper.get("_target_"))
        if sweeper == f"{BoundarySweeper.__module__}.{BoundarySweeper.__name__}":
            search = Search(cfg.hydra.sweeper, loader, task)
            jobs = search.round_zero()
            if notes is not None:
                notes.append(f"a boundary search of {len(search.cells)} cell(s): {len(jobs)} "
                             f"run(s) in round 0, at most {search.worst_case()} in all")
            return jobs, True, is_remote(cfg)
        if sweeper != f"{GrokSweeper.__module__}.{GrokSweeper.__name__}":
            raise SearchSweep(f"--dry-run lists a grid's jobs; {sweeper} chooses its jobs as it "
                              f"runs (its launcher checks each batch before running it)")
        jobs = [j for b in expand(loader, cfg.hydra.sweeper.get("params"), task) for j in b]
        return jobs, True, is_remote(cfg)


class SearchSweep(Exception):
    """A sweeper that is not a grid: its jobs are known only as it runs."""


def check(argv: list[str], keep: list | None = None,
          notes: list | None = None) -> tuple[str | None, int]:
    """(error, number of jobs): error is None if every job of the command line composes and
    validates and no two share a run folder, else one line. `keep`, if given, receives
    (overrides, config) of every job; `notes` plan's notes. The launchers run the same check on
    every batch."""
    try:
        jobs, multirun, remote = plan(argv, notes)
        with _hydra() as loader:
            checked = _checker(loader, remote).check_all(jobs)
            shared = _shared_config(loader, argv)
            check_launch(shared, multirun, submits=False)  # a dry run (or one run): nothing submitted
            why = cannot_submit(shared) if multirun else None
            if why and notes is not None:
                notes.append(f"note: {why}; a dry run checks the jobs only")
    except BadInput as e:
        return str(e), 0
    except (HydraException, OmegaConfBaseException) as e:
        return hydra_one_line(e), 0
    if keep is not None:
        keep += [(job, cfg) for job, (cfg, _) in zip(jobs, checked)]
    return None, len(jobs)


def _shared_config(loader, argv: list[str]) -> DictConfig:
    """The config every job of the command line shares, with its hydra node (folders, launcher)."""
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(parse_flags(argv).overrides)
    return compose("config", overrides=[o.input_line for o in parsed if not o.is_sweep_override()],
                   return_hydra_config=True)


def check_shared(argv: list[str]) -> str | None:
    """A sweep's value overrides that are no sweep (Hydra applies them to the config every job
    shares, before the sweeper): an unknown key gets the "did you mean" line here, not Hydra's
    advice to add a `+`."""
    try:
        with _hydra() as loader:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(
                parse_flags(argv).overrides)
            _checker(loader, remote=True).check_keys(
                [o.input_line for o in parsed if not o.is_sweep_override() and not is_hydra(o)])
            # and a bad launcher or sweeper name, sweep_id, sweep folder or launcher value
            check_launch(_shared_config(loader, argv), multirun=True)
    except BadInput as e:
        return str(e)
    except (HydraException, OmegaConfBaseException) as e:
        return hydra_one_line(e)
    return None


@hydra.main(config_path=str(CONF), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from grok.train import run  # torch and the models: only a job pays for them, not --help

    run_dir = HydraConfig.get().runtime.output_dir
    single = HydraConfig.get().mode == RunMode.RUN
    try:
        summary = run(cfg, run_dir, hydra_files(cfg))  # errors are logged to its launch.log there
    except FolderError as e:  # the folder refused this launch: nothing written or logged there
        if single:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    except Exception as e:
        record_failure(run_dir, e)
        if single:
            print(f"error: {one_line(e)} (log: {Path(run_dir) / 'launch.log'})", file=sys.stderr)
            sys.exit(1)
        raise
    if threading.current_thread() is threading.main_thread():
        # The run is complete and on disk: a time-limit warning (SLURM sends it up to a minute
        # early) now has nothing to save, and dying of it would mark a finished job FAILED.
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if single:  # where to look next
        print(f"run folder: {run_dir} ({outcome(summary)})")
    return objective(cfg, summary)  # the summary, or the float a search sweeper optimizes


def outcome(summary: dict) -> str:
    """A finished run in a few words: its verdict, its grok step where it has one, its best test
    accuracy to 3 places ("grokked at step 2650, best test acc 0.997")."""
    step, acc = summary.get("grok_step"), summary.get("best_test_acc")
    words = f"{summary.get('verdict')}" + ("" if step is None else f" at step {step}")
    return words + ("" if acc is None else f", best test acc {acc:.3f}")


def report(sweep_dir: str, jobs: list | None = None) -> bool:
    """Print one line per job of the sweep; True if every job completed. `jobs`: (overrides,
    config) of every job of this launch (checked by the launchers), listed whether or not they got a folder;
    without them, the run folders found in `sweep_dir`."""
    rows = sweep_status(sweep_dir, None if jobs is None else
                        [(overrides, fingerprint(cfg)) for overrides, cfg in jobs])
    bad = [r for r in rows if r[1] != "complete"]
    print(f"sweep {sweep_dir}: {len(rows) - len(bad)} of {len(rows)} jobs complete", file=sys.stderr)
    for job, status, what in rows:
        log_hint = f" (log: {job}/launch.log)" if status in ("failed", "unfinished") else ""
        print(f"  {status:<11} {Path(job).name}: {what}{log_hint}", file=sys.stderr)
    return not bad


def cli() -> None:
    argv = sys.argv[1:]
    args = parse_flags(argv)
    if not args.asks:
        if args.dry_run or not args.multirun:
            # A single run is checked here (Hydra runs it without a sweeper or launcher); a
            # dry run expands and checks every job here and never reaches Hydra's main, so its
            # flag needs no place among Hydra's own.
            try:
                jobs: list = []
                notes: list = []
                error, n_jobs = check(argv, keep=jobs, notes=notes)
            except SearchSweep as e:
                error, n_jobs = str(e), 0
        else:  # the sweeper and the launchers check every job; this only what all jobs share
            error, n_jobs = check_shared(argv), None
        if error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        if args.dry_run:
            for job, _ in jobs:
                print(f"  {job_dirname(job)}: {' '.join(job) or '(no overrides)'}")
            print(f"{n_jobs} job(s), every config valid; nothing run")
            for line in notes:
                print(line)
            return
    # Jobs (SLURM, submitit, pool workers) import grok from this checkout, not from whatever
    # an install elsewhere put on their path: the same code as the launcher that checked them.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")]))
    refused = False  # a launcher refused a batch (exit 2): no job ran, nothing to report
    try:
        main()
    except SystemExit as e:
        refused = e.code == 2
        raise
    finally:
        if not refused and SweepReport.sweep_dir and Path(SweepReport.sweep_dir).is_dir():
            # Job folders named otherwise than by identity: list the folders found instead.
            named = not any(a.split("=")[0].lstrip("+") == "hydra.sweep.subdir" for a in argv)
            if not report(SweepReport.sweep_dir, checked_jobs() if named else None):
                sys.exit(1)


if __name__ == "__main__":
    cli()
