"""`hydra/sweeper=grok` (the default, conf/config.yaml): Hydra's grid sweep, as its basic sweeper
builds it, expanded with Hydra's public override parser created with the config loader (so
`glob()`, `range()`, `choice()`, `tag()`, `sort()` work as Hydra documents them), and one
`sweep_id` per launch in every job.

`sweep_id` defaults to `${grok.launch_id:}` (_batch.launch_id), an id fixed once per process to
the microsecond. The sweeper writes the concrete id into its config (multirun.yaml, the sweep
folder), and it and every project launcher add `sweep_id=<id>` to each job's overrides unless the
command line set one, so a job composed in another process (pool, SLURM) has the same id.
"""

import itertools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.grok_launchers._batch import check_batch, folder_refusal, with_sweep_id

log = logging.getLogger(__name__)


@dataclass
class GrokSweeperConf:
    _target_: str = "hydra_plugins.grok_launchers.sweeper.GrokSweeper"
    max_batch_size: Optional[int] = None  # null: the whole grid in one batch
    params: Optional[dict[str, str]] = None  # sweeps of a preset (experiment/furuta_table.yaml)


ConfigStore.instance().store(group="hydra/sweeper", name="grok", node=GrokSweeperConf,
                             provider="grok")


def expand(config_loader, params: dict | None, arguments: list[str],
           max_batch_size: int | None = None) -> list[list[list[str]]]:
    """Batches of job override lists: the grid of `params` then `arguments` (a later override of
    a key replaces an earlier one), in Hydra's basic sweeper's order."""
    parser = OverridesParser.create(config_loader=config_loader)
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    axes: dict[str, list[str]] = {}
    for o in parser.parse_overrides(lines):
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise HydraException(f"{o.input_line}: the grok sweeper sweeps lists, ranges and globs; "
                                 f"use a search sweeper for intervals (hydra/sweeper=optuna)")
    jobs = [list(x) for x in itertools.product(*axes.values())]
    n = max_batch_size if max_batch_size and max_batch_size > 0 else max(1, len(jobs))
    return [jobs[i:i + n] for i in range(0, len(jobs), n)]


class GrokSweeper(Sweeper):
    """Hydra's grid sweep with the whole grid checked before any job runs or anything is written."""

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None) -> None:
        self.max_batch_size, self.params = max_batch_size, params or {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        batches = expand(self.hydra_context.config_loader, self.params, arguments,
                         self.max_batch_size)
        batches = [with_sweep_id(self.config, batch) for batch in batches]
        with open_dict(self.config):
            self.config.sweep_id = str(self.config.sweep_id)  # multirun.yaml: this launch's id
        # Every job of the grid is checked before the first runs (and before anything is
        # written); the launchers' own check of each batch then finds it checked already.
        check_batch(self.hydra_context, self.config, [job for batch in batches for job in batch])
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, first = [], 0
        for batch in batches:
            results = self.launcher.launch(batch, initial_job_idx=first)
            for r in results:
                refused = folder_refusal(r)
                if refused:  # another launch works there: one line, and the sweep report says so
                    print(f"error: {refused}", file=sys.stderr)
                    continue
                _ = r.return_value  # a failed job raises here, as in Hydra's basic sweeper
            first += len(batch)
            returns.append(results)
        return returns
