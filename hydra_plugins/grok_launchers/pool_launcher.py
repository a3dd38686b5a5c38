"""`hydra/launcher=pool`: the jobs of a sweep on this machine, each in its own fresh process,
at most `n_jobs` at once.

A job that dies (SIGKILL from the out-of-memory killer, a segfault, `os._exit`) is one failed job:
its process was its own, so no other job goes with it, the next job starts, its folder gets a
failed `summary.json` naming the cause, and the launch returns normally so the sweep is reported.
(A pool that reuses workers, as joblib's loky does, breaks as a whole when one worker dies.)

Each job runs `python -P -m hydra_plugins.grok_launchers.pool_job`, which composes its config and
runs it through Hydra's `run_job` exactly as Hydra's own launchers do: the same folder,
`.hydra/`, `launch.log`; its stdout and stderr are this process's.

SIGTERM or SIGINT to the launcher (`kill`, Ctrl-C) is handed to every job running: each
checkpoints its exact step and exits (grok.train.deferred_signals), no queued job starts, the
launcher waits for them, removes its temporary folder and then ends of that signal. No job holds
its folder after that, so the same command relaunched resumes every unfinished run.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from omegaconf import OmegaConf, open_dict

from hydra_plugins.grok_launchers._batch import ProjectLauncher, checked_launch, job_outcome, sweep_progress

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often finished jobs are looked for; jobs take seconds to hours
# Thread pools of a job, shared out as joblib's loky workers do: n jobs at once on c cores get c // n
# threads each (unless set already). Oversubscribed OpenMP threads made a tiny run ~100x slower.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_GRACE_S = 120  # a job told to stop checkpoints within one step; past this it is killed


class JobDied(RuntimeError):
    """A job's process ended without returning a result: killed by a signal, or exited early."""


def n_workers(n_jobs: int, n_tasks: int) -> int:
    """joblib's convention: n_jobs > 0 is that many, -1 one per core, -2 all cores but one, ..."""
    n = n_jobs if n_jobs > 0 else cores() + 1 + n_jobs
    return max(1, min(n, n_tasks))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    if returncode > 0:
        return f"exit status {returncode} before returning a result"
    return "exited without returning a result"


def sweep_config(hydra_context, config, overrides, num):
    """The job's config as Hydra's launchers compose it (`hydra.job.num`, `hydra.job.id` set)."""
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = f"{cfg.hydra.job.name}_{num}"
        cfg.hydra.job.num = num
    return cfg


def execute_job(num, overrides, hydra_context, config, task_function, singleton_state) -> JobReturn:
    """In the job's process: what hydra-joblib-launcher's worker does for one job."""
    from hydra.core.utils import run_job

    setup_globals()
    Singleton.set_state(singleton_state)
    cfg = sweep_config(hydra_context, config, overrides, num)
    HydraConfig.instance().set_config(cfg)
    return run_job(hydra_context=hydra_context, config=cfg, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


@contextlib.contextmanager
def held_signals(signals=STOP_SIGNALS, on_signal=None):
    """Record SIGTERM and SIGINT instead of dying of them, so that the launcher can hand them to
    its jobs and wait for them first (`on_signal(signum)`, if given, is called at each). Yields
    the list of signals received, in order; on exit the previous handlers are back and the first
    signal received is raised again under them."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def hold(signum, frame):
        got.append(signum)
        if on_signal is not None:
            on_signal(signum)

    for s in signals:
        signal.signal(s, hold)
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if got:
        log.warning("received %s: every job has stopped; ending", signal.Signals(got[0]).name)
        signal.raise_signal(got[0])


class PoolLauncher(ProjectLauncher):
    """Each job in a fresh process (`pool_job`), at most `n_jobs` at once, in job order."""

    def __init__(self, n_jobs: int = 2, **_: Any) -> None:
        self.n_jobs = n_jobs  # checked with the batch (_batch.check_launcher), before any job runs

    @checked_launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               checked=None) -> Sequence[JobReturn]:
        import cloudpickle

        sweep_dir = self.start()
        jobs = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        n = n_workers(self.n_jobs, len(jobs))
        log.info("Pool(n_jobs=%d) is launching %d jobs, one process each", n, len(jobs))
        log.info("Launching jobs, sweep output dir : %s", sweep_dir)
        for num, overrides in jobs:
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        rets: list[JobReturn | None] = [None] * len(jobs)
        with held_signals() as got, tempfile.TemporaryDirectory(prefix="grok-pool-") as tmp:
            shared = Path(tmp) / "shared.pkl"  # what every job needs, written once
            with open(shared, "wb") as f:
                cloudpickle.dump({"hydra_context": self.hydra_context, "config": self.config,
                                  "task_function": self.task_function,
                                  "singleton_state": Singleton.get_state()}, f)
            env = {v: str(max(1, cores() // n)) for v in THREAD_VARS} | dict(os.environ)
            if n > 1:  # several jobs share this terminal: their lines only, no live bars
                from grok.progress import NO_BAR

                env[NO_BAR] = "1"
            progress = sweep_progress(checked, lanes=n)
            queue, running = deque(range(len(jobs))), {}
            handed, deadline = 0, None
            try:
                while running or (queue and not got):
                    if handed < len(got):  # a stop signal: to every job running, none started after
                        for sig in got[handed:]:
                            log.warning("received %s: handing it to %d running job(s); %d not started",
                                        signal.Signals(sig).name, len(running), len(queue))
                            for proc in running.values():
                                proc.send_signal(sig)
                        handed, deadline = len(got), deadline or time.monotonic() + STOP_GRACE_S
                    if deadline and time.monotonic() > deadline:
                        break  # the finally below kills what is left
                    while queue and not got and len(running) < n:
                        i = queue.popleft()
                        running[i] = self._start(shared, Path(tmp), env, *jobs[i])
                    finished = [i for i, proc in running.items() if proc.poll() is not None]
                    for i in finished:
                        proc = running.pop(i)
                        result = Path(tmp) / f"{jobs[i][0]}.result"
                        if got and not (proc.returncode == 0 and result.exists()):
                            continue  # stopped as told: unfinished, it resumes at a relaunch
                        rets[i] = self._result(proc, result, *jobs[i])
                        progress.finish(i, **job_outcome([rets[i]]))
                    if not finished:
                        time.sleep(POLL_S)
            finally:  # interrupted otherwise, or past the grace: stop the jobs; they resume later
                for proc in running.values():
                    if got:  # told to stop already and did not within STOP_GRACE_S
                        proc.kill()
                    else:
                        proc.terminate()
                for proc in running.values():
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        return rets

    def _start(self, shared: Path, tmp: Path, env: dict, num: int, overrides: list[str]) -> subprocess.Popen:
        job = tmp / f"{num}.json"
        job.write_text(json.dumps({"num": num, "overrides": overrides, "sys_path": sys.path}))
        # -P: nothing from the working folder ahead of the launcher's own import path
        return subprocess.Popen([sys.executable, "-P", "-m", "hydra_plugins.grok_launchers.pool_job",
                                 str(shared), str(job), str(tmp / f"{num}.result")], env=env)

    def _result(self, proc, result: Path, num: int, overrides: list[str]) -> JobReturn:
        import cloudpickle

        if proc.returncode == 0 and result.exists():
            try:
                with open(result, "rb") as f:
                    return cloudpickle.load(f)
            except Exception as e:  # noqa: BLE001 - one unreadable result is one failed job
                return self._died(f"unreadable result ({type(e).__name__}: {e})", num, overrides)
        return self._died(f"worker died: {how_it_ended(proc.returncode)}", num, overrides)

    def _died(self, what: str, num: int, overrides: list[str]) -> JobReturn:
        """A job whose process ended without a result: its folder says it failed and why, unless
        its run had already completed (then the record on disk is the whole result)."""
        from grok.record.local import read_summary, record_failure

        ret = JobReturn(overrides=overrides)
        try:
            run_dir = self.job_dir(num, overrides)
        except Exception as e:  # noqa: BLE001 - no folder to mark; the sweep still goes on
            log.error("job #%d failed: %s (its folder is unknown: %s)", num, what, e)
            ret.status, ret.return_value = JobStatus.FAILED, JobDied(what)
            return ret
        summary = read_summary(run_dir)
        if summary and summary.get("status") == "complete":
            log.warning("job #%d (%s): %s after its run completed; the record in %s is complete",
                        num, " ".join(filter_overrides(overrides)), what, run_dir)
            ret.status, ret.return_value = JobStatus.COMPLETED, summary
            return ret
        error = JobDied(what)
        log.error("job #%d (%s) failed: %s", num, " ".join(filter_overrides(overrides)), error)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "launch.log", "a") as f:  # the job's own log ends saying so
            f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}][{__name__}][ERROR] - {error}\n")
        record_failure(run_dir, error)
        ret.status, ret.return_value = JobStatus.FAILED, error
        return ret

    def job_dir(self, num: int, overrides: list[str]) -> Path:
        """The job's folder, computed as `run_job` computes it."""
        cfg = sweep_config(self.hydra_context, self.config, overrides, num)
        hydra_config = HydraConfig.instance()
        before = hydra_config.cfg
        hydra_config.set_config(cfg)  # ${hydra:...} in the subdir resolves against this job
        try:
            out = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")))
            return Path(os.path.abspath(out / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))))
        finally:
            hydra_config.cfg = before
