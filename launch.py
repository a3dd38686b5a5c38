#!/usr/bin/env python
"""Run one grokking experiment or a sweep: `python launch.py [-m] [overrides...]`.

Before Hydra creates any folder, every job of the sweep is composed and checked, so bad input
costs one line on stderr and exit status 2, and leaves nothing half-written on disk.
"""

import logging
import re
import sys
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent / "conf"
log = logging.getLogger("grok")


def _is_hydra_override(o) -> bool:
    return re.split(r"[./]", o.key_or_group.lstrip("+~"), maxsplit=1)[0] == "hydra"


def expand_jobs(argv: list[str]) -> tuple[list[list[str]], bool]:
    """The override list of every job this command line would launch (hydra.* ones left out)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(argv)
    parsed = [o for o in OverridesParser.create().parse_overrides(args.overrides)
              if not _is_hydra_override(o)]
    if args.multirun:
        return BasicSweeper.split_arguments(parsed, None)[0], True
    return [[o.input_line for o in parsed]], False


def preflight(argv: list[str]) -> str | None:
    """None if every job composes and validates, else a one-line error."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    from grok.config import ConfigError, validate

    try:
        jobs, _ = expand_jobs(argv)
    except HydraException as e:
        return f"bad override: {' '.join(str(e).split())}"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        checked = set()
        for overrides in jobs:
            key = tuple(sorted(overrides))
            if key in checked:
                continue
            checked.add(key)
            try:
                validate(compose("config", overrides=overrides))
            except MissingConfigException as e:
                m = re.search(r"Could not find '([^/']+)/([^']+)'", str(e))
                if m and e.options:
                    return (f"unknown {m[1]} '{m[2]}' (available: "
                            f"{', '.join(sorted(e.options))})")
                return " ".join(str(e).split())
            except ConfigError as e:
                return str(e)
            except HydraException as e:
                return " ".join(str(e).split())
    return None


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from grok.tracking import record_failure
    from grok.train import run

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        return run(cfg, run_dir)
    except Exception as e:
        log.exception("job failed")  # into this job's launch.log, traceback included
        record_failure(run_dir, e)
        raise


def report(sweep_dir: str) -> bool:
    """Print one line per job of the sweep; True if every job completed."""
    from grok.tracking import sweep_status

    rows = sweep_status(sweep_dir)
    bad = [r for r in rows if r[1] != "complete"]
    print(f"sweep {sweep_dir}: {len(rows) - len(bad)} of {len(rows)} jobs complete", file=sys.stderr)
    for job, status, what in rows:
        log_hint = f" (log: {job}/launch.log)" if status != "complete" else ""
        print(f"  {Path(job).name:>4}  {status:<10} {what}{log_hint}", file=sys.stderr)
    return not bad


def cli() -> None:
    argv = sys.argv[1:]
    if not any(a in ("-h", "--help", "--hydra-help", "--info", "-i") or a.startswith(
            ("--shell-completion", "-sc")) for a in argv):
        error = preflight(argv)
        if error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    if not any(a.split("=")[0].lstrip("+") == "sweep_id" for a in argv):
        # One id for every job of this launch: W&B group and sweep folder name. Microseconds,
        # so two sweeps started in the same second do not share a folder.
        sys.argv.append(f"sweep_id={datetime.now():%Y-%m-%d_%H-%M-%S-%f}")
    from grok.tracking import SweepReport

    try:
        main()
    finally:
        if SweepReport.sweep_dir and Path(SweepReport.sweep_dir).is_dir():
            ok = report(SweepReport.sweep_dir)
            if not ok:
                sys.exit(1)


if __name__ == "__main__":
    cli()
