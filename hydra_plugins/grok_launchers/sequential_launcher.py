"""`hydra/launcher=sequential` (the default, conf/config.yaml): each job of a batch in this process,
one after another, as Hydra's basic launcher runs them, after the whole batch is checked
(_batch.check_batch), so a search sweeper's batches are checked too."""

import logging
from dataclasses import dataclass
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job
from omegaconf import open_dict

from hydra_plugins.grok_launchers._batch import ProjectLauncher, checked_launch, job_outcome, sweep_progress

log = logging.getLogger(__name__)


@dataclass
class SequentialLauncherConf:
    _target_: str = "hydra_plugins.grok_launchers.sequential_launcher.SequentialLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="sequential", node=SequentialLauncherConf,
                             provider="grok")


class SequentialLauncher(ProjectLauncher):
    @checked_launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               checked=None) -> Sequence[JobReturn]:
        self.start()
        log.info("Launching %d jobs locally", len(job_overrides))
        runs, progress = [], sweep_progress(checked)
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            runs.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                config=sweep_config, job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            progress.finish(idx - initial_job_idx, **job_outcome(runs[-1:]))
        return runs
