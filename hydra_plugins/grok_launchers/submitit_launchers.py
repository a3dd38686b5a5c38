"""`hydra/launcher=slurm` and `hydra/launcher=local`: hydra-submitit-launcher's launchers, each
batch checked here (batch check: compose, validate, no shared folder) before any job of it is
submitted. The compute nodes check their own CUDA device."""

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from hydra_plugins.grok_launchers._batch import checked_launch


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    @checked_launch
    def launch(self, job_overrides, initial_job_idx, checked=None):
        return super().launch(job_overrides, initial_job_idx)


class LocalLauncher(submitit_launcher.LocalLauncher):
    @checked_launch
    def launch(self, job_overrides, initial_job_idx, checked=None):
        return super().launch(job_overrides, initial_job_idx)
