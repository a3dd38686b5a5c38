"""The up-front check of a batch of jobs, run by every project launcher before it runs any job of
the batch (and by launch.py for a single run and for --dry-run): compose each job, validate it
(grok.checks.check, with no key added or removed against the same group choices), and no two
jobs sharing a run folder. Bad input is one line on stderr and exit status 2.

Composing is ~75 ms a job, too slow for a 700-job preset, so each distinct choice of config groups
is composed once and the job's plain value overrides are applied to a copy with OmegaConf's public
API (`apply_values`), as Hydra applies them. A value override of a key that the config does not
have is added here, so the key check names it with the project's "did you mean" rather than
Hydra's advice to add a `+`.

The leading underscore keeps Hydra's plugin scanner from executing this module a second time (it
re-runs every other module of hydra_plugins), so its exception class and its record of the batches
checked in this process stay one.

This module holds every call of the launch layer into grok/ for a batch: `grok.checks.check`,
`grok.config.ConfigError` / `check_sweep_id`, `grok.record.identity.job_dirname` / `identity_key`
/ `run_key`, `grok.record.lock.FolderError`. They are imported where they are used: Hydra imports
every module of hydra_plugins at start-up, for any command, and the checks import torch.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import configure_log, setup_globals
from hydra.errors import HydraException, MissingConfigException
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# Sweepers that read each job's summary (the grid sweepers, the grok one and Hydra's basic one,
# and the boundary sweeper, which reads its verdict): any other searches by a number each job
# returns (optimized_metric).
SUMMARY_SWEEPERS = (".GrokSweeper", ".BasicSweeper", ".BoundarySweeper")
# Keys that say what a job returns to a search sweeper, and which way is better.
METRICS = {"best_test_acc": "maximize", "final_test_acc": "maximize", "grok_step": "minimize",
           "memorisation_step": "minimize"}


@functools.cache
def launch_id() -> str:
    """This process's launch id (`sweep_id`'s default): its first call's time, to the microsecond."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"


if not OmegaConf.has_resolver("grok.launch_id"):
    OmegaConf.register_new_resolver("grok.launch_id", launch_id)


def with_sweep_id(config: DictConfig, job_overrides) -> list[list[str]]:
    """The jobs with `sweep_id=<this launch's id>` added where they set none, so that a job
    composed in another process (pool, SLURM) has the id of the launch."""
    sweep_id = str(config.sweep_id)
    return [list(job) if any(o.split("=", 1)[0].lstrip("+") == "sweep_id" for o in job)
            else [*job, f"sweep_id={sweep_id}"] for job in job_overrides]


class BadInput(Exception):
    """One line naming the bad value: the launch stops before any job runs."""


def is_hydra(o: Override) -> bool:
    return re.split(r"[./]", o.key_or_group.lstrip("+~"), maxsplit=1)[0] == "hydra"


def one_line(e: Exception) -> str:
    m = re.search(r"Could not find '(.+)/([^/']+)'", str(e))
    if isinstance(e, MissingConfigException) and m and e.options:
        return f"unknown {m[1]} '{m[2]}' (available: {', '.join(sorted(e.options))})"
    return " ".join(str(e).split())


def apply_values(overrides: Sequence[Override], cfg: DictConfig) -> None:
    """Apply plain value overrides (`k=v`, `+k=v`, `++k=v`, `~k`) to `cfg` as Hydra does, except
    that `k=v` on a missing key adds it (the key check then refuses it with "did you mean")."""
    for o in overrides:
        key, value = o.key_or_group, o.value()
        if o.is_delete():
            if OmegaConf.select(cfg, key, throw_on_missing=False) is None:
                raise BadInput(f"~{key}: there is no {key} to remove")
            parent, _, leaf = key.rpartition(".")
            with open_dict(cfg):
                del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
        elif o.is_add() and OmegaConf.select(cfg, key, throw_on_missing=False) is not None \
                and not isinstance(value, (dict, list)):
            raise BadInput(f"{o.input_line}: {key} exists already (drop the +)")
        else:
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)


class Checker:
    """Composes and validates jobs given by their (non-hydra) override lists. `compose(overrides)`
    composes a config from group overrides; `groups` are the config group names."""

    def __init__(self, compose: Callable[[list[str]], DictConfig], groups: set[str],
                 parser: OverridesParser, remote: bool = False):
        self.compose, self.groups, self.parser, self.remote = compose, groups, parser, remote
        self.base: dict[tuple, tuple[DictConfig, dict]] = {}

    def config(self, job: Sequence[str]) -> DictConfig:
        overrides = [o for o in self.parser.parse_overrides(list(job)) if not is_hydra(o)]
        is_group = [o.key_or_group.lstrip("+~") in self.groups for o in overrides]
        key = tuple(o.input_line for o, g in zip(overrides, is_group) if g)
        if key not in self.base:
            cfg = self.compose(list(key))
            if "hydra" in cfg:
                with open_dict(cfg):
                    del cfg["hydra"]
            self.base[key] = cfg, OmegaConf.to_container(cfg, resolve=False)
        cfg = OmegaConf.create(self.base[key][0])  # a copy; struct flag carried over
        apply_values([o for o, g in zip(overrides, is_group) if not g], cfg)
        return cfg

    def check_keys(self, job: Sequence[str]) -> None:
        """Only the key check (no key added or removed): for the overrides every job of a sweep
        shares, which need not make a whole job."""
        from grok.config import ConfigError, check_keys

        try:
            check_keys(self.config(job), self.base[self._key(job)][1])
        except ConfigError as e:
            raise BadInput(str(e)) from None
        except (HydraException, OmegaConfBaseException) as e:
            raise BadInput(one_line(e)) from None

    def check(self, job: Sequence[str]):
        """The job's config and task; BadInput if a value is bad."""
        from grok.checks import check
        from grok.config import ConfigError

        try:
            cfg = self.config(job)
            # reference: no key added (`+fracc=0.3`) or removed (`~p`) by the overrides
            task = check(cfg, device_here=not self.remote, reference=self.base[self._key(job)][1])
            metric = cfg.get("optimized_metric")
            if metric is not None and metric not in METRICS:
                raise BadInput(f"optimized_metric={metric}: not one of {', '.join(METRICS)}")
        except ConfigError as e:
            raise BadInput(str(e)) from None
        except (HydraException, OmegaConfBaseException) as e:
            raise BadInput(one_line(e)) from None
        return cfg, task

    def _key(self, job) -> tuple:
        return tuple(o.input_line for o in self.parser.parse_overrides(list(job))
                     if not is_hydra(o) and o.key_or_group.lstrip("+~") in self.groups)

    def check_all(self, jobs: Sequence[Sequence[str]]) -> list:
        """(config, task) of every job, in order; BadInput at the first bad job or shared folder."""
        out = [self.check(job) for job in jobs]
        overrides = [task_overrides(self.parser, j) for j in jobs]
        error = same_folder(overrides) or same_run(overrides, [cfg for cfg, _ in out])
        if error:
            raise BadInput(error)
        return out


def task_overrides(parser: OverridesParser, job: Sequence[str]) -> list[str]:
    return [o.input_line for o in parser.parse_overrides(list(job)) if not is_hydra(o)]


def same_folder(jobs: list[list[str]]) -> str | None:
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


def same_run(jobs: list[list[str]], configs: list[DictConfig]) -> str | None:
    """Two jobs of a sweep in two folders that train one run (`op=x+y,y+x`: one op, two spellings;
    grok.record.identity.run_key): an error, not two bit-identical runs pooled as two seeds."""
    from grok.record.identity import fingerprint, run_key

    seen: dict[str, int] = {}
    for i, cfg in enumerate(configs):
        key = run_key(fingerprint(cfg))
        if key in seen:
            j = seen[key]
            a, b = jobs[j], jobs[i]
            differ = [o for o in a if o not in b], [o for o in b if o not in a]
            what = " and ".join(" ".join(d) or "(no overrides)" for d in differ)
            return (f"jobs {j} and {i} of the sweep are the same run ({what} train the same "
                    f"thing); drop one")
        seen[key] = i
    return None


NAME_MAX, PATH_MAX = 255, 4096  # bytes of one folder name and of a path (Linux, macOS)
ROOM = 80  # a file's name inside a run folder (`summary.json.tmp-...`), with room to spare


def check_launch(config: DictConfig, multirun: bool, submits: bool = True) -> None:
    """What a launch writes to and how it runs, before anything is written: `sweep_id`, the
    sweep or run folder (hydra.sweep.dir, hydra.run.dir: no folder name or path longer than a
    file system allows, where `mkdir` would fail with "File name too long" after the check),
    the project launchers' own values (`max_pack`, `n_jobs`), and, where the jobs are to be
    `submits`ed (not a dry run), SLURM's commands for a SLURM launcher. BadInput, one line."""
    from grok.config import ConfigError, check_sweep_id
    from grok.record.identity import MAX_NAME

    try:
        check_sweep_id(config.sweep_id)
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        folder = Path(str(OmegaConf.select(config, key)))
        check_folder(key, folder, inner=MAX_NAME + 1 + ROOM if multirun else ROOM)
        launcher = OmegaConf.select(config, "hydra.launcher") if multirun else None
        if launcher is not None:
            check_launcher(launcher)
            why = cannot_submit(config) if submits else None
            if why:
                raise BadInput(why)
    except ConfigError as e:
        raise BadInput(str(e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise BadInput(one_line(e)) from None


def check_folder(key: str, folder: Path, inner: int) -> None:
    """No folder name of `folder` longer than NAME_MAX bytes, and room for `inner` more bytes
    (a job's folder and its files) within PATH_MAX."""
    shown = str(folder) if len(str(folder)) <= 80 else f"{str(folder)[:77]}..."
    for part in folder.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise BadInput(f"{key}={shown}: a folder name of {len(os.fsencode(part))} bytes, more "
                           f"than the {NAME_MAX} a file system allows")
    total = len(os.fsencode(str(folder.absolute()))) + 1 + inner
    if total > PATH_MAX:
        raise BadInput(f"{key}={shown}: a path of {total - 1 - inner} bytes leaves no room for "
                       f"its files within the {PATH_MAX} a file system allows")


def check_launcher(launcher) -> None:
    """hydra.launcher.max_pack: null (auto) or a number of runs >= 1; n_jobs (pool): a whole
    number other than 0 (joblib's: -1 one per core, -2 all cores but one)."""
    target = str(launcher.get("_target_", ""))
    if "max_pack" in launcher:
        n = launcher.max_pack
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise BadInput(f"hydra.launcher.max_pack={n!r}: must be a number of runs >= 1, or null "
                           f"(on a GPU what half its free memory holds, on a CPU 16)")
    if target.endswith(".PoolLauncher"):
        n = launcher.get("n_jobs")
        if not isinstance(n, int) or isinstance(n, bool) or n == 0:
            raise BadInput(f"hydra.launcher.n_jobs={n!r}: must be a whole number other than 0 (n: at "
                           f"most n jobs at once; -1: one per core; -2: all cores but one)")


def cannot_submit(config: DictConfig) -> str | None:
    """Why this machine cannot submit the launch's jobs to SLURM (no `sbatch` or `srun` on PATH,
    where submitit would fail after the check with a long traceback), or None."""
    if not is_remote(config):
        return None
    choice = OmegaConf.select(config, "hydra.runtime.choices", default={}).get("hydra/launcher")
    target = config.hydra.launcher._target_
    name = f"hydra/launcher={choice}" if choice else f"hydra.launcher._target_={target}"
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        return (f"{name}: no {' or '.join(missing)} on PATH, so no SLURM to submit to from this "
                f"machine (run it on the cluster's login node, or hydra/launcher=pool to run here)")
    silent = slurm_silent()
    if silent:
        return (f"{name}: SLURM does not answer from this machine (`scontrol ping`: {silent}); "
                f"start it or run on the cluster's login node, or hydra/launcher=pool to run here")
    return None


def slurm_silent(timeout_s: float = 30) -> str | None:
    """Why SLURM's controller does not answer (`scontrol ping`'s last line), or None where it does
    or there is no scontrol to ask. sbatch would otherwise fail inside submitit, traceback and all."""
    if shutil.which("scontrol") is None:
        return None
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"no answer in {timeout_s:.0f} s"
    if r.returncode == 0 and "DOWN" not in r.stdout:
        return None
    lines = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()
    return lines[-1].strip()


def groups_of(config_loader) -> set[str]:
    return {g for g in config_loader.list_groups("") if g != "hydra"}


def is_remote(config: DictConfig) -> bool:
    """Do this launch's jobs run on other nodes (SLURM)? They check their CUDA device there."""
    return "slurm" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower()


def launcher_checker(hydra_context, config: DictConfig) -> Checker:
    """The checker of a launcher's batches: jobs composed as the launcher composes them."""
    loader = hydra_context.config_loader
    return Checker(lambda o: loader.load_sweep_config(config, o), groups_of(loader),
                   OverridesParser.create(config_loader=loader), remote=is_remote(config))


_checked: dict[tuple, dict] = {}  # batches this process checked already (by the sweeper)


def check_batch(hydra_context, config: DictConfig, job_overrides) -> list:
    """(config, task) of every job of a launcher's batch; on bad input, one line on stderr and
    exit status 2, before any job of the batch runs. A batch that is part of one checked before
    in this process (the grok sweeper checks its whole grid first) is not checked again."""
    jobs = [tuple(j) for j in job_overrides]
    key = tuple(config.hydra.overrides.hydra)
    done = _checked.get(key, {})
    if all(j in done for j in jobs):
        return [done[j] for j in jobs]
    try:
        check_launch(config, multirun=True)
        out = launcher_checker(hydra_context, config).check_all(job_overrides)
    except BadInput as e:
        refuse(str(e))
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if not sweeper.endswith(SUMMARY_SWEEPERS) and any(c.get("optimized_metric") is None for c, _ in out):
        refuse(f"hydra.sweeper={sweeper.rpartition('.')[2]} searches by each job's objective: set "
               f"optimized_metric to one of {', '.join(METRICS)} (and the sweeper's direction)")
    _checked[key] = done | dict(zip(jobs, out))
    return out


def checked_launch(launch):
    """A project launcher's `launch(self, job_overrides, initial_job_idx, checked)`, called with the
    launch's `sweep_id` in every job, after the batch is checked (`checked`: (config, task) of
    each job), and with each distinct job once: a search sweeper may propose one point twice in a
    batch (optuna over `choice()`), and both copies get the one run's JobReturn. A grid sweeper
    refuses such a repeat up front, as two jobs sharing a folder."""
    @functools.wraps(launch)
    def wrapper(self, job_overrides, initial_job_idx: int):
        jobs = [tuple(j) for j in with_sweep_id(self.config, job_overrides)]
        distinct = [list(j) for j in dict.fromkeys(jobs)]
        checked = check_batch(self.hydra_context, self.config, distinct)
        rets = dict(zip(map(tuple, distinct), launch(self, distinct, initial_job_idx, checked)))
        return [rets[j] for j in jobs]
    return wrapper


class ProjectLauncher(Launcher):
    """What the project's launchers on Hydra's Launcher API share: Hydra's setup, and
    `start()` at the head of a launch (Hydra's globals and logging, the sweep folder)."""

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def start(self) -> Path:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return sweep_dir


def checked_jobs() -> list[tuple[list[str], DictConfig]]:
    """(overrides, config) of every job this process checked, in order: the sweep's report."""
    return [(list(job), cfg) for done in _checked.values() for job, (cfg, _) in done.items()]


def folder_refusal(ret) -> str | None:
    """The one line of a job whose folder refused it (in use by another launch of the sweep, or
    another run's; grok.record.lock.FolderError), else None: for that, no traceback."""
    from hydra.core.utils import JobStatus

    from grok.record.lock import FolderError

    error = getattr(ret, "_return_value", None)
    return str(error) if ret.status == JobStatus.FAILED and isinstance(error, FolderError) else None


def sweep_progress(checked, units: list[list[int]] | None = None, lanes: int = 1):
    """The batch's progress line (grok.progress.SweepProgress): per unit of work (each job, or
    each pack of `units`, indices of `checked`), its run count and longest step budget."""
    from grok.progress import SweepProgress

    units = units or [[i] for i in range(len(checked))]
    return SweepProgress([(len(u), max(checked[i][0].train.steps for i in u)) for u in units], lanes)


def job_outcome(rets) -> dict:
    """What the progress line reads of finished JobReturns: how many failed, and the most steps
    and mean steps/s of the runs whose results are summaries (grok.progress.summary_reading)."""
    from hydra.core.utils import JobStatus

    from grok.progress import summary_reading

    steps, speed = summary_reading([getattr(r, "_return_value", None) for r in rets
                                    if r is not None and r.status == JobStatus.COMPLETED])
    failed = sum(r is None or r.status != JobStatus.COMPLETED for r in rets)
    return {"failed": failed, "steps": steps, "speed": speed}


def refuse(line: str):
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(2)


def objective(cfg, summary: dict):
    """What a job returns: its summary, or with `optimized_metric` set, that float (a search
    sweeper's objective). A run that did not grok returns its budget for grok_step."""
    metric = cfg.get("optimized_metric") if cfg is not None else None
    if metric is None or not isinstance(summary, dict):
        return summary
    value = summary.get(metric)
    if value is None and metric == "grok_step":
        value = cfg.train.steps
    return float("nan") if value is None else float(value)
