"""Sweeps from Python, for notebooks: `grok.compose(overrides)` and `grok.run(configs, sweep_dir)`.

No subprocess and no second copy of the launch code: `compose` is Hydra's compose API on the
project's conf/ with the check every launch runs on every job (launch.py's checker,
hydra_plugins/grok_launchers/_batch.py); `run` plans packs and trains them as
`hydra/launcher=packed` does (its `plan_packs` and `train_pack_jobs`, so grok.train's pack
trainer, each run's launch.log, a failed run recorded as failed). Only Hydra's app is left out:
no working folder, no job numbers, no `.hydra/` files.

A run's folder is named from its config, not from the overrides that made it (a config may be
edited after `compose`): the keys where it differs from the default config, by the same rule as a
sweep job's folder (grok.record.identity), e.g. `frac=0.6,p=23,seed=1`. So a second `run` of the
same configs into the same folder finds every run it has trained (a complete run is read back,
an unfinished one resumed) and trains none twice.
"""

import contextlib
import copy
import functools
import logging
from pathlib import Path
from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grok.checks import check
from grok.config import ConfigError, check_sweep_id
from grok.history import load_run
from grok.record.identity import MAX_NAME, diff, fingerprint, safe_dirname
from hydra_plugins.grok_launchers._batch import (
    ROOM,
    BadInput,
    check_folder,
    check_launcher,
    is_hydra,
    one_line,
    same_run,
)
from hydra_plugins.grok_launchers.compose import checker as _checker
from hydra_plugins.grok_launchers.compose import hydra_compose as _hydra
from hydra_plugins.grok_launchers.packed_launcher import plan_packs, train_pack_jobs


class RunFailed(RuntimeError):
    """Runs of a `grok.run` call that failed (the others are complete on disk): one line each."""


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """One run's config from conf/ and Hydra overrides (`["p=23", "frac=0.6", "seed=1"]`; group
    choices too: `["task=sub", "model=transformer"]`), checked as a launch checks every job.
    Bad input raises BadInput, one line naming the bad value; a sweep (`frac=0.3,0.5`) is one
    `compose` per value."""


    if isinstance(overrides, str):
        raise BadInput(f"grok.compose({overrides!r}): give a list of overrides, e.g. [{overrides!r}]")
    overrides = [str(o) for o in overrides]
    try:
        with _hydra() as loader:
            for o in OverridesParser.create(config_loader=loader).parse_overrides(overrides):
                if o.is_sweep_override():
                    raise BadInput(f"{o.input_line}: a sweep; grok.compose makes one config "
                                   f"(compose one per value)")
                if is_hydra(o):
                    raise BadInput(f"{o.input_line}: Hydra's own settings play no part in grok.compose")
            cfg, _ = _checker(loader, remote=False).check(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise BadInput(one_line(e)) from None
    return cfg


def run(configs, sweep_dir, *, max_pack: int | None = None) -> list:
    """Train `configs` (one config of `compose` or a list of them) into run folders under
    `sweep_dir`, as packs of at most `max_pack` runs (None: what `hydra/launcher=packed` takes);
    their records (grok.RunRecord), in order. Every config is checked before any run starts
    (BadInput); runs already complete there are read back, not trained again. A run that fails
    leaves its folder saying so, the others train on, and then RunFailed names it."""


    cfgs = [configs] if isinstance(configs, DictConfig) else list(configs)
    bad = [type(c).__name__ for c in cfgs if not isinstance(c, DictConfig)]
    if bad or not cfgs:
        raise BadInput(f"grok.run takes a config of grok.compose or a list of them, not "
                       f"{bad[0] if bad else 'an empty list'}")
    sweep = Path(sweep_dir)
    check_folder("sweep_dir", sweep, inner=MAX_NAME + 1 + ROOM)
    check_launcher(OmegaConf.create({"max_pack": max_pack}))
    checked = []
    for i, cfg in enumerate(cfgs):
        cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
        if OmegaConf.is_interpolation(cfg, "sweep_id"):  # unset: the sweep folder names it, as in the CLI
            try:
                check_sweep_id(sweep.absolute().name)
                cfg.sweep_id = sweep.absolute().name
            except ConfigError:
                pass
        try:
            checked.append((cfg, check(cfg)))
        except (ConfigError, HydraException, OmegaConfBaseException) as e:
            line = str(e) if isinstance(e, ConfigError) else one_line(e)
            raise BadInput(f"config {i}: {line}" if len(cfgs) > 1 else line) from None
    names = [folder_name(cfg) for cfg, _ in checked]
    error = same_run([[n] for n in names], [cfg for cfg, _ in checked])
    if error:
        raise BadInput(error)
    dirs = [sweep / n for n in names]
    rets = [None] * len(cfgs)
    with _info_logged():
        for pack in plan_packs(checked, max_pack):
            prepared = [(checked[i][0], _job(dirs[i])) for i in pack]
            for i, ret in zip(pack, train_pack_jobs(prepared, [checked[i][1] for i in pack])):
                rets[i] = ret
    # a failed JobReturn raises its error when asked for return_value; _return_value holds it
    failed = [f"{d}: {' '.join(str(r._return_value).split())}" for d, r in zip(dirs, rets)
              if r.status == JobStatus.FAILED]
    if failed:
        raise RunFailed(f"{len(failed)} of {len(cfgs)} run(s) failed (see launch.log there): "
                        + "; ".join(failed))
    return [load_run(d) for d in dirs]


@contextlib.contextmanager
def _info_logged():
    """The runs' INFO lines reach their launch.log (train_pack_jobs' handler on the root logger)
    as under Hydra's job logging (root at INFO), whatever level the caller's root logger has."""
    loggers = [logging.getLogger(n) for n in ("grok", "hydra_plugins.grok_launchers")]
    levels = [g.level for g in loggers]
    for g in loggers:
        if g.getEffectiveLevel() > logging.INFO:
            g.setLevel(logging.INFO)
    try:
        yield
    finally:
        for g, level in zip(loggers, levels):
            g.setLevel(level)


def _job(run_dir: Path):
    """A JobReturn as the packed launcher's `prepare_jobs` makes one: its run folder, no files."""

    ret = JobReturn()
    ret.status, ret.return_value, ret.files = JobStatus.COMPLETED, str(run_dir), None
    return ret


@functools.cache
def _default() -> dict:

    return fingerprint(compose([]))


def folder_name(cfg: DictConfig) -> str:
    """The run folder of `cfg` in a sweep: `key=value` for every key of its identity where it
    differs from the default config (`~key` where it has none), as a sweep job's folder is named
    (grok.record.identity.safe_dirname): `frac=0.6,p=23,seed=1`, `default` for none."""

    base, mine = _default(), fingerprint(cfg)
    items = []
    for key in diff(base, mine):
        node = OmegaConf.select(OmegaConf.create(mine), key, default=_MISSING)
        items.append(f"~{key}" if node is _MISSING else f"{key}={_text(node)}")
    return safe_dirname(items)


_MISSING = object()


def _text(value) -> str:
    """A value as a sweep job's folder name writes an override's value (as Hydra writes one:
    `0.5`, `False`, `null`, `[0.9,0.98]`, `x+y`); the folder name escapes what a path cannot hold."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_text(k)}:{_text(v)}" for k, v in value.items()) + "}"
    return str(value)
