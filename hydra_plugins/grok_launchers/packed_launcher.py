"""Hydra launchers that train a sweep as packs: `hydra/launcher=packed` (here) and
`hydra/launcher=slurm_packed` (one SLURM job per pack, through submitit).

Jobs are grouped by `grok.train.pack_key` (same shapes, optimizer kind, device, dtype, step
budget, eval interval), sorted by train-set size inside a group so a pack pads little, and cut
into packs of at most `max_pack` runs. Every job gets its folder as Hydra's own launchers name it
(by its identity, grok.record.identity) and then exactly the records of a single run (`.hydra/`,
`launch.log`, ...). Each run of a pack holds its folder's lock; a run its folder refuses fails
alone and nothing is written there. A pack that fails marks its own jobs failed; the other packs
still run.
"""

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

import grok.record.identity  # noqa: F401  (the resolver that names job folders: hydra.sweep.subdir)
from hydra_plugins.grok_launchers._batch import (
    ProjectLauncher,
    checked_launch,
    job_outcome,
    objective,
    refuse,
    sweep_progress,
)

log = logging.getLogger(__name__)

CPU_MAX_PACK = 16  # a CPU pack runs in cache-sized chunks (grok.train.chunk_size) and gains little
MAX_PACK = 1024


def default_max_pack(cfg, task) -> int:
    """The most runs per pack, for a pack whose largest run is `cfg` (its task `task`): on a GPU
    as many as about half its free memory holds (`run_bytes`), on a CPU CPU_MAX_PACK."""
    from grok.hardware import is_gpu

    if not is_gpu(cfg.train.device):
        return CPU_MAX_PACK
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(cfg.train.device))
    return max(1, min(MAX_PACK, int(0.5 * free / run_bytes(cfg, task))))


def run_bytes(cfg, task) -> int:
    """Peak bytes of one run, by the estimate the up-front check refuses runs with
    (grok.config.memory_estimate and peak_bytes)."""
    from grok.config import memory_estimate, peak_bytes

    return peak_bytes(memory_estimate(cfg, task.size(), task.vocab))


def plan_packs(checked, max_pack: int | None) -> list[list[int]]:
    """Indices of `checked` ((config, task) of each job, from the batch check) grouped into packs:
    jobs of one pack key, in order of train-set size so a pack pads little, cut into packs of at
    most `max_pack` runs (None: `default_max_pack` of the pack's largest run)."""
    from grok.train import pack_key

    groups: dict[tuple, list[int]] = {}
    for i, (c, task) in enumerate(checked):
        groups.setdefault(pack_key(c, task), []).append(i)
    packs = []
    for idx in groups.values():
        idx.sort(key=lambda i: (checked[i][0].frac, i))
        pack: list[int] = []
        for i in idx:  # ascending size: the newest run is the pack's largest
            if pack and len(pack) >= (max_pack or default_max_pack(*checked[i])):
                packs.append(pack)
                pack = []
            pack.append(i)
        packs.append(pack)
    return packs


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def pack_limit(max_pack: int | None, checked, packs) -> str:
    """What a pack may hold, in words: max_pack, or what null resolved to for these packs
    (`default_max_pack` of each pack's largest run, its last)."""
    if max_pack:
        return plural(max_pack, "run")
    sizes = sorted({default_max_pack(*checked[pack[-1]]) for pack in packs})
    where = "on a CPU" if all(s == CPU_MAX_PACK for s in sizes) and sizes else "half the GPU's free memory"
    return f"{'/'.join(map(str, sizes))} runs (max_pack=null: {where})"


class _RunLogs(logging.Handler):
    """Sends each log record of a pack to its run's `launch.log` (records that name a run, via
    `extra={"run": dir}`) or to the logs of every run that holds its folder (records about the
    whole pack). A folder that refused its run gets no line (files open at their first line)."""

    def __init__(self, run_dirs):
        super().__init__()
        fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        self.files = {}
        for d in run_dirs:
            h = logging.FileHandler(Path(d) / "launch.log", delay=True)
            h.setFormatter(fmt)
            self.files[str(d)] = h

    def emit(self, record):
        from grok.record.lock import holds

        target = getattr(record, "run", None)
        for d, h in self.files.items():
            if target == d or (target is None and holds(d)):
                h.handle(record)

    def close(self):
        for h in self.files.values():
            h.close()
        super().close()


def prepare_jobs(hydra_context, config, jobs) -> list[tuple[Any, JobReturn]]:
    """Compose each (overrides, job number) and make its folder as Hydra's launchers do; return
    (task config, JobReturn) pairs, the config as the task function would receive it."""
    out = []
    for overrides, idx in jobs:
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        got = {}

        def collect(cfg, got=got):
            from grok.record.local import hydra_files

            got["cfg"], got["files"] = cfg, hydra_files(cfg)
            return HydraConfig.get().runtime.output_dir

        ret = run_job(hydra_context=hydra_context, task_function=collect, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        ret.files = got.get("files")
        out.append((got.get("cfg"), ret))
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return out


def train_pack_jobs(prepared, tasks: list | None = None) -> list[JobReturn]:
    """Train one pack of prepared jobs; their JobReturns with the summaries (or the error).
    Errors are in the runs' launch.log already (grok.train.train_pack logs them). `tasks`: the
    jobs' tasks from the batch check, so that a job builds its task once in this process."""
    from grok.record.local import one_line, record_failure
    from grok.record.lock import FolderError
    from grok.train import train_pack

    cfgs = [cfg for cfg, _ in prepared]
    dirs = [ret.return_value for _, ret in prepared]
    handler = _RunLogs(dirs)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        try:
            results = train_pack(cfgs, dirs, [getattr(ret, "files", None) for _, ret in prepared],
                                 tasks)
        except Exception as e:  # one failed pack never takes down the sweep
            log.error("pack of %d job(s) failed: %s", len(dirs), one_line(e))
            results = [e] * len(dirs)
        for (cfg, ret), d, r in zip(prepared, dirs, results):
            if isinstance(r, BaseException):
                if isinstance(r, FolderError):
                    log.error("%s", r)
                else:
                    record_failure(d, r)
                ret.return_value, ret.status = r, JobStatus.FAILED
            else:
                ret.return_value, ret.status = objective(cfg, r), JobStatus.COMPLETED
    finally:
        root.removeHandler(handler)
        handler.close()
    return [ret for _, ret in prepared]


class PackedLauncher(ProjectLauncher):
    """Trains every pack of the sweep in this process, one pack after another."""

    def __init__(self, max_pack: int | None = None, **_: Any) -> None:
        self.max_pack = max_pack

    @checked_launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               checked=None) -> Sequence[JobReturn]:
        self.start()
        jobs = [(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        packs = plan_packs(checked, self.max_pack)
        prepared = prepare_jobs(self.hydra_context, self.config, jobs)
        log.info("%s in %s of at most %s", plural(len(jobs), "job"), plural(len(packs), "pack"),
                 pack_limit(self.max_pack, checked, packs))
        progress = sweep_progress(checked, packs)
        for k, pack in enumerate(packs):
            log.info("pack %d: %s", k, "; ".join(Path(prepared[i][1].return_value).name for i in pack))
            rets = train_pack_jobs([prepared[i] for i in pack], [checked[i][1] for i in pack])
            progress.finish(k, **job_outcome(rets))
        return [ret for _, ret in prepared]


class SlurmPackedLauncher(BaseSubmititLauncher):
    """One SLURM job (array task) per pack. Packs are planned here from the composed configs;
    each job composes its configs again and trains its pack. USR2 (preemption, time limit) makes
    every run of the pack checkpoint its exact step, then submitit requeues the job, which
    resumes every run from its checkpoint."""

    _EXECUTOR = "slurm"

    def __init__(self, **params: Any) -> None:
        self.max_pack = params.pop("max_pack", None)
        super().__init__(**params)

    def __call__(self, jobs, job_dir_key, job_num, job_id, singleton_state) -> list[JobReturn]:
        import signal
        import threading

        Singleton.set_state(singleton_state)
        setup_globals()
        rets = train_pack_jobs(prepare_jobs(self.hydra_context, self.config, jobs))
        if threading.current_thread() is threading.main_thread():
            # The pack is complete and on disk: a late time-limit warning has nothing to save.
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        return rets

    @checked_launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               checked=None) -> Sequence[JobReturn]:
        import submitit

        jobs = [(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        from grok.hardware import is_gpu

        if self.max_pack is None and any(is_gpu(c.train.device) for c, _ in checked):
            refuse("hydra.launcher.max_pack must be set for slurm_packed with train.device=cuda "
                   "(this node cannot see the compute nodes' GPUs)")
        packs = plan_packs(checked, self.max_pack)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        log.info("%d job(s) in %d SLURM pack job(s)", len(jobs), len(packs))
        args = []
        for k, pack in enumerate(packs):
            members = [jobs[i] for i in pack]
            log.info("\tpack %d: %s", k, "; ".join(
                f"#{n} {' '.join(filter_overrides(o))}" for o, n in members))
            args.append((members, "hydra.sweep.dir", k, f"pack_{k}", Singleton.get_state()))
        submitted = executor.map_array(self, *zip(*args))
        rets = []
        # read in submission order (a pack that ends early is counted when the ones before it
        # have); the ETA takes every pack job to run at once, as a free queue runs an array
        progress = sweep_progress(checked, packs, lanes=len(packs))
        for k, (job, (members, *_)) in enumerate(zip(submitted, args)):
            try:
                got = job.results()[0]
            except Exception as e:  # the pack job died outside training (node, OOM, ...)
                log.error("pack job %s failed: %s", job.job_id, e)
                got = [_failed(e) for _ in members]
            rets += got
            progress.finish(k, **job_outcome(got))
        return rets


def _failed(error: Exception) -> JobReturn:
    ret = JobReturn()
    ret.return_value, ret.status = error, JobStatus.FAILED
    return ret
