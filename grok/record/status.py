"""The status of a job and of a sweep, read from their folders (reads only), and the Hydra
callback that remembers where a multirun writes so the launch can report every job."""

from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from grok.record.files import CHECKPOINT, CONFIG, METRICS, SUMMARY
from grok.record.identity import changes, fingerprint, job_dirname
from grok.record.local import last_metrics_step, read_summary
from grok.record.lock import holder


def folder_identity(run_dir) -> dict | None:
    """The fingerprint of the config the folder's run was made with (grok.record.identity.fingerprint
    of its config.yaml), or None if it has no readable one."""
    try:
        return fingerprint(OmegaConf.load(Path(run_dir) / CONFIG))
    except Exception:  # noqa: BLE001 - missing or unreadable: no identity to compare
        return None


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def continuation(run_dir, summary: dict, config: dict | None = None) -> str | None:
    """Why a complete `summary` is not the final state of the run in `run_dir` (one line), or None.

    A run relaunched with a larger `train.steps` (a continuation: the same run, further) keeps
    the summary its earlier budget wrote until it finishes; killed before that, the folder holds a
    complete summary of a run that has moved on. Its checkpoint decides (a relaunch rewrites the
    summary from it); readers use what moves with it, cheaper than loading it: config.yaml's
    budget (written before the continuation's first step) and metrics.jsonl's last row (written
    before each checkpoint). `config`: config.yaml already read, as a dict."""
    steps = summary.get("steps")
    if not _int(steps):
        return None
    if config is None:
        try:
            config = yaml.safe_load((Path(run_dir) / CONFIG).read_text())
        except Exception:  # noqa: BLE001 - missing or unreadable: no budget to compare
            config = None
    train = config.get("train") if isinstance(config, dict) else None
    budget = train.get("steps") if isinstance(train, dict) else None
    stopped = summary.get("early_stopped") is True or summary.get("diverged") is True
    if _int(budget) and budget > steps and not stopped:
        return (f"continuation in progress: {SUMMARY} is at step {steps}, {CONFIG} has "
                f"train.steps={budget}; relaunch it to finish")
    last = last_metrics_step(run_dir)
    if last is not None and last > steps:
        return (f"continuation in progress: {SUMMARY} is at step {steps}, {METRICS} at step {last}; "
                f"relaunch it to finish")
    return None


def job_status(run_dir, identity: dict | None = None) -> tuple[str, str]:
    """(status, verdict or what went wrong) of a job's folder; with `identity` (the job's config
    fingerprint), a folder that holds a run of another config is "refused"."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "not run", "no folder: the job never started"
    who = holder(run_dir)
    if who:
        return "running", f"in use by {who}"
    found = folder_identity(run_dir) if identity is not None else None
    changed = changes(found, identity) if found is not None else []
    if changed:
        return "refused", (f"the folder holds a run of another config (differs in "
                           f"{', '.join(changed)}); nothing written there")
    s = read_summary(run_dir)
    if s is None:
        if (run_dir / CHECKPOINT).exists():
            return "unfinished", f"no readable {SUMMARY}; relaunch to resume from {CHECKPOINT}"
        return "unfinished", f"no readable {SUMMARY}"
    if s.get("status") == "complete" and (why := continuation(run_dir, s)):
        return "unfinished", why
    return s.get("status", "?"), s.get("verdict") or s.get("error", "")


def sweep_status(sweep_dir, jobs=None) -> list[tuple[str, str, str]]:
    """(job folder, status, verdict or error) for every job of a sweep: `jobs` are (override
    list, config fingerprint or None) of each job the launch had, whether or not it got a folder;
    without them, every run folder found in the sweep folder."""
    sweep_dir = Path(sweep_dir)
    if jobs is None:
        found = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and any((p / f).exists() for f in (CONFIG, SUMMARY, CHECKPOINT)))
        return [(str(p), *job_status(p)) for p in found]
    rows = []
    for overrides, identity in jobs:
        job = sweep_dir / job_dirname(overrides)
        rows.append((str(job), *job_status(job, identity)))
    return rows


class SweepReport(Callback):
    """Remembers where a multirun writes, so launch.py can report every job once it ends,
    including when Hydra stops with an error (it then skips on_multirun_end)."""

    sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepReport.sweep_dir = str(config.hydra.sweep.dir)
