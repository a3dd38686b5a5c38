#!/usr/bin/env python
"""Run one grokking experiment or a sweep: `python launch.py [-m] [--dry-run] [overrides...]`.

Before Hydra creates any folder, every job of the sweep is composed and checked, so bad input
costs one line on stderr and exit status 2, and leaves nothing half-written on disk.
"""

import logging
import os
import re
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def _conf_dir() -> Path:
    """conf/ beside this file (a checkout or an editable install), else the copy a regular
    install packages as grok/conf (pyproject.toml)."""
    here = Path(__file__).resolve().parent / "conf"
    if here.is_dir():
        return here
    from importlib.resources import files

    return Path(str(files("grok") / "conf"))


# An absolute path: Hydra reads a relative config_path as a Python package when launch is
# imported as a module (the grok-launch console script), and there is no package `conf`.
CONF = _conf_dir()
HELP_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i")
log = logging.getLogger("grok")


def _is_hydra_override(o) -> bool:
    return re.split(r"[./]", o.key_or_group.lstrip("+~"), maxsplit=1)[0] == "hydra"


def expand_jobs(argv: list[str]) -> tuple[list[list[str]], bool, bool]:
    """The override list of every job this command line would launch, as Hydra's basic sweeper
    builds it: sweep params of the config (an experiment's `hydra.sweeper.params`), then the
    command line. hydra.* overrides are left out: they do not change a job's config. Also
    returns whether this is a multirun, and whether its jobs run on other nodes (SLURM)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(argv)
    parser = OverridesParser.create()
    everything = parser.parse_overrides(args.overrides)
    parsed = [o for o in everything if not _is_hydra_override(o)]
    # The first job with the hydra overrides too: a bad launcher name fails here, up front.
    first = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
             if o.is_sweep_override() else o.input_line for o in everything]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        hydra_cfg = compose("config", overrides=first, return_hydra_config=True).hydra
    # Jobs that run on other nodes (SLURM) check their CUDA device there, not here.
    remote = args.multirun and "slurm" in str(hydra_cfg.launcher.get("_target_", "")).lower()
    if not args.multirun:
        return [[o.input_line for o in parsed]], False, False
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + [o.input_line for o in parsed])
    return BasicSweeper.split_arguments(parsed, None)[0], True, remote


def _one_line(e: Exception) -> str:
    from hydra.errors import MissingConfigException

    m = re.search(r"Could not find '(.+)/([^/']+)'", str(e))
    if isinstance(e, MissingConfigException) and m and e.options:
        return f"unknown {m[1]} '{m[2]}' (available: {', '.join(sorted(e.options))})"
    return " ".join(str(e).split())


def preflight(argv: list[str], keep: list | None = None) -> tuple[str | None, int]:
    """(error, number of jobs): error is None if every job composes and validates, else one line.
    `keep`, if given, receives (overrides, config) of every job, for the report at the end.

    Composing is ~75 ms a job, too slow for a 700-job preset, so each distinct choice of config
    groups is composed once and the plain value overrides are applied to a copy, as Hydra does."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from grok.checks import check
    from grok.config import ConfigError

    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    parser = OverridesParser.create()
    try:
        jobs, _, remote = expand_jobs(argv)
        with initialize_config_dir(str(CONF), version_base="1.3"):
            base, keys = {}, {}
            for job in jobs:
                overrides = parser.parse_overrides(job)
                is_group = [o.key_or_group.lstrip("+~") in groups for o in overrides]
                key = tuple(o.input_line for o, g in zip(overrides, is_group) if g)
                if key not in base:
                    base[key] = compose("config", overrides=list(key))
                    keys[key] = OmegaConf.to_container(base[key], resolve=False)
                cfg = OmegaConf.create(base[key])  # a copy; struct flag carried over
                ConfigLoaderImpl._apply_overrides_to_config(
                    [o for o, g in zip(overrides, is_group) if not g], cfg)
                # reference: no key added (`+fracc=0.3`) or removed (`~p`) by the overrides
                check(cfg, device_here=not remote, reference=keys[key])
                if keep is not None:
                    keep.append((job, cfg))
        error = _same_folder(jobs) if len(jobs) > 1 else None
        if error:
            return error, 0
    except ConfigError as e:
        return str(e), 0
    except (HydraException, OmegaConfBaseException) as e:
        return _one_line(e), 0
    return None, len(jobs)


def _same_folder(jobs: list[list[str]]) -> str | None:
    """Two jobs of a sweep that are one run (one folder: grok.record.identity.job_dirname): an error."""
    from grok.record.identity import identity_key, job_dirname

    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        name = job_dirname(job)
        if name in seen:
            other = jobs[seen[name]]
            differ = sorted({o.split("=", 1)[0] for o in set(job) ^ set(other)})
            what = (f"they differ only in {', '.join(differ)}, which continue a run rather than make "
                    f"another" if differ and not any(identity_key(k.lstrip("+~")) for k in differ)
                    else "they are the same run")
            return f"jobs {seen[name]} and {i} of the sweep would share the run folder '{name}': {what}"
        seen[name] = i
    return None


@hydra.main(config_path=str(CONF), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from hydra.types import RunMode

    from grok.record.local import hydra_files, one_line, record_failure
    from grok.record.lock import FolderError
    from grok.train import run

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
        print(f"run folder: {run_dir} ({summary.get('verdict')}, best test acc "
              f"{summary.get('best_test_acc')})")
    return summary


def report(sweep_dir: str, jobs: list | None = None) -> bool:
    """Print one line per job of the sweep; True if every job completed. `jobs`: (overrides,
    config) of every job of this launch (from preflight), listed whether or not they got a folder;
    without them, the run folders found in `sweep_dir`."""
    from grok.record.identity import fingerprint
    from grok.record.status import sweep_status

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
    dry_run = "--dry-run" in argv
    if dry_run:
        argv = [a for a in argv if a != "--dry-run"]
    jobs: list | None = None
    asks = any(a in HELP_FLAGS or a.startswith(("--shell-completion", "-sc")) for a in argv)
    if not asks:
        jobs = []
        error, n_jobs = preflight(argv, keep=jobs)
        if error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        if dry_run:
            print(f"{n_jobs} job(s), every config valid; nothing run")
            return
    if not asks and not any(a.split("=")[0].lstrip("+") == "sweep_id" for a in argv):
        # One id for every job of this launch: W&B group and sweep folder name. Microseconds,
        # so two sweeps started in the same second do not share a folder.
        # Beside the other overrides: argparse takes them as one run of positionals.
        at = next((i for i, a in enumerate(sys.argv) if i and "=" in a and not a.startswith("-")),
                  len(sys.argv))
        sys.argv.insert(at, f"sweep_id={datetime.now():%Y-%m-%d_%H-%M-%S-%f}")
    # Jobs (SLURM, submitit, joblib workers) import grok from this checkout, not from whatever
    # an install elsewhere put on their path: the same code as the launcher that checked them.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")]))
    from grok.record.status import SweepReport

    try:
        main()
    finally:
        if SweepReport.sweep_dir and Path(SweepReport.sweep_dir).is_dir():
            # Job folders named otherwise than by identity: list the folders found instead.
            if any(a.split("=")[0].lstrip("+") == "hydra.sweep.subdir" for a in argv):
                jobs = None
            ok = report(SweepReport.sweep_dir, jobs)
            if not ok:
                sys.exit(1)


if __name__ == "__main__":
    cli()
