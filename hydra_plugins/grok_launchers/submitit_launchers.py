"""`hydra/launcher=slurm` and `hydra/launcher=local`: hydra-submitit-launcher's launchers, each
batch checked here (batch check: compose, validate, no shared folder) before any job of it is
submitted. The compute nodes check their own CUDA device.

A stop signal to the local launcher (SIGTERM from `kill`, SIGINT) reaches every job it started:
the launcher hands SIGTERM to each of its submitit controllers, which pass it to their job; the
job checkpoints its exact step and ends of it (grok.train.deferred_signals); then the launcher ends
of the signal it got. Nothing holds a folder after that, so the same command relaunched resumes
every unfinished run. (submitit's jobs ignore SIGTERM, the right thing on SLURM, which sends it to
every step of a job at its time limit; a local job is ours to stop, so it ends of SIGTERM here.)
SLURM jobs are the cluster's: they keep running when the launcher stops, and a relaunch collects
them.
"""

import logging
import os
import signal
from pathlib import Path

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from hydra_plugins.grok_launchers._batch import checked_launch
from hydra_plugins.grok_launchers.pool_launcher import held_signals

log = logging.getLogger(__name__)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux: /proc). submitit starts one controller process
    per local job and keeps no public handle on it."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    @checked_launch
    def launch(self, job_overrides, initial_job_idx, checked=None):
        return super().launch(job_overrides, initial_job_idx)


class LocalLauncher(submitit_launcher.LocalLauncher):
    @checked_launch
    def launch(self, job_overrides, initial_job_idx, checked=None):
        with held_signals(on_signal=self._stop) as got:
            try:
                return super().launch(job_overrides, initial_job_idx)
            except Exception:
                if not got:
                    raise
                return []  # the jobs stopped as told (no result); held_signals now ends the launcher

    @staticmethod
    def _stop(signum: int) -> None:
        pids = children(os.getpid())
        log.warning("received %s: handing SIGTERM to %d local job(s); they checkpoint and stop",
                    signal.Signals(signum).name, len(pids))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)  # submitit's controller passes SIGTERM on to its job
            except ProcessLookupError:
                pass

    def __call__(self, *args, **kwargs):
        """In the job's process, after submitit set its handlers: SIGTERM ends the job (after the
        run's checkpoint) instead of being ignored."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return super().__call__(*args, **kwargs)
