"""Where a run's results go: a local record in its folder (always) and W&B (when asked).

The local record is the source of truth: every file is replaced atomically, a full disk is one
clear error that overwrites nothing, and a W&B failure only disables W&B for that run. JSON has
no NaN or Infinity: a non-finite float (a diverged loss) is written as null, which pandas reads
as NaN; every file is valid JSON (`json.dumps(..., allow_nan=False)`).
"""

import errno
import json
import logging
import math
import os
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from grok.folders import DiskFull, FolderError, FolderInUse, FolderLock, holder, job_dirname

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"


def atomic_write(path: Path, write) -> None:
    """Write through `write(file)` to a temporary file in the same folder, then rename over
    `path`: a reader (or a resumed run) sees the old file or the new one, never half of one."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _disk_full(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(e, path)
        if full is e:
            raise
        raise full from None


def _disk_full(error: BaseException, path) -> BaseException:
    """ENOSPC as one line naming the file (DiskFull); any other error as it is."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) \
            and not isinstance(error, DiskFull):
        return DiskFull(path)
    return error


def jsonable(value):
    """`value` with every non-finite float replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(value, **kw) -> str:
    """Strict JSON (no NaN, no Infinity: those become null)."""
    return json.dumps(jsonable(value), allow_nan=False, **kw)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def as_trained(cfg: DictConfig) -> dict:
    """The resolved config as trained, what config.yaml and W&B show: `task.op` is the op the run
    learned (the top-level `op`), not the task's default, which an `op=` override leaves behind."""
    c = OmegaConf.to_container(cfg, resolve=True)
    if "op" in c and isinstance(c.get("task"), dict) and "op" in c["task"]:
        c["task"]["op"] = c["op"]
    return c


class LocalRecord:
    """config.yaml (resolved); metrics.jsonl, one JSON object per eval (read it with
    `pd.read_json(path, lines=True, precise_float=True)`: without precise_float pandas rounds
    the last digits); summary.json, written once at the end."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: DictConfig) -> None:
        write_text(self.dir / CONFIG, OmegaConf.to_yaml(OmegaConf.create(as_trained(cfg))))

    @staticmethod
    def metrics_text(rows: list[dict]) -> str:
        return "".join(dumps(r) + "\n" for r in rows)

    def rewrite_metrics(self, rows: list[dict]) -> None:
        """Replace the metrics file with exactly `rows` (on resume, drop rows past the checkpoint)."""
        write_text(self.dir / METRICS, self.metrics_text(rows))

    def append_metrics(self, row: dict) -> None:
        # A kill mid-line leaves at most one torn last line, which resume rewrites away.
        path = self.dir / METRICS
        try:
            with open(path, "a") as f:
                f.write(dumps(row) + "\n")
        except OSError as e:
            raise _disk_full(e, path) from None

    def write_summary(self, summary: dict) -> None:
        write_text(self.dir / SUMMARY, summary_text(summary))

    def write_files(self, files: dict[str, str]) -> None:
        """Other files of the job, by path relative to the folder (Hydra's `.hydra/`)."""
        for rel, text in files.items():
            (self.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            write_text(self.dir / rel, text)


def summary_text(summary: dict) -> str:
    return dumps(summary, indent=2) + "\n"


def read_summary(run_dir) -> dict | None:
    """The folder's summary.json, or None if there is none or it is not readable JSON."""
    try:
        s = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def hydra_files(task_cfg: DictConfig) -> dict[str, str]:
    """What Hydra writes into a job folder before the job runs (`.hydra/`), for the run to write
    once it owns the folder: conf/config.yaml turns Hydra's own writing off (hydra.output_subdir),
    so that a launch refused by a folder writes nothing there. Call it inside the job (HydraConfig)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg
    return {".hydra/config.yaml": OmegaConf.to_yaml(task_cfg),
            ".hydra/hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


class WandbRun:
    """One W&B run per job; any W&B error is logged and turns W&B off for this run. How it
    looks there (name, tags, metric definitions, histograms, files): grok.wandb_view."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_id: str, task=None):
        self.run, self.cfg, self.dir = None, cfg, Path(run_dir)
        if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
            return
        try:
            import wandb

            from grok import wandb_view as view

            self.run = wandb.init(
                project=cfg.logger.project, entity=cfg.logger.entity, group=str(cfg.sweep_id),
                job_type="train", dir=str(run_dir), mode=cfg.logger.mode, id=run_id,
                resume="allow", config=as_trained(cfg),
                name=view.run_name(cfg, task) if task else None,
                tags=view.run_tags(cfg, task) if task else None,
                reinit="create_new",  # the runs of a pack are open at once, one W&B run each
                settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
            )
            view.define_metrics(self.run)
            self._save(self.dir / CONFIG)
        except Exception as e:  # noqa: BLE001 - W&B must never cost the local record
            log.warning("W&B disabled for this run: %s", e)
            self.run = None

    def _save(self, path: Path) -> None:
        """A copy of `path` among the run's W&B files (a copy: the W&B run stays whole if the
        run folder moves before `wandb sync`)."""
        import shutil

        files = Path(self.run.dir)
        if path.parent != files:
            shutil.copyfile(path, files / path.name)
        self.run.save(str(files / path.name), base_path=str(files), policy="now")

    def log(self, row: dict, step: int) -> None:
        if self.run is not None:
            try:
                from grok.wandb_view import wandb_row

                self.run.log(wandb_row(row), step=step)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B logging failed, disabling it: %s", e)
                self.run = None

    def finish(self, summary: dict | None = None) -> None:
        """Summary and verdict tag, the run's summary.json and its plot (the figure
        `python -m analysis plots` draws) as files, the checkpoint as an artifact if
        `logger.log_checkpoint`."""
        if self.run is None:
            return
        try:
            if summary:
                # grok and memorisation steps stay even when null: "never reached" is a result
                self.run.summary.update({k: v for k, v in summary.items() if v is not None or k in (
                    "grok_step", "memorisation_step")})
                if summary.get("verdict"):
                    from grok.verdict import GROKKED, NO_DELAY, NOT_GENERALISED

                    old = [t for t in self.run.tags if t not in (GROKKED, NO_DELAY, NOT_GENERALISED)]
                    self.run.tags = (*old, summary["verdict"])
            if (self.dir / SUMMARY).exists():
                self._save(self.dir / SUMMARY)
            if summary and self.cfg.logger.get("log_plot", True) and (self.dir / METRICS).exists():
                from analysis.plots import plot_run

                self._save(plot_run(self.dir, Path(self.run.dir) / "curves.png"))
            if self.cfg.logger.get("log_checkpoint") and (self.dir / CHECKPOINT).exists():
                import wandb

                art = wandb.Artifact(f"checkpoint-{self.run.id}", type="model", metadata={
                    k: summary.get(k) for k in ("verdict", "steps", "grok_step", "best_test_acc")
                } if summary else None)
                art.add_file(str(self.dir / CHECKPOINT), name=CHECKPOINT)
                self.run.log_artifact(art)
            self.run.finish()
        except Exception as e:  # noqa: BLE001
            log.warning("W&B finish failed: %s", e)
        self.run = None


def one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def record_failure(run_dir, error: BaseException) -> bool:
    """Leave a failed job's folder saying so, for the sweep report and the analysis tables; True
    if written. Best effort, and never where it would lose or mix records: not for a launch the
    folder refused (FolderError: the folder is another run's), not while another process works
    in the folder, never over a complete summary.json."""
    run_dir = Path(run_dir)
    if isinstance(error, FolderError) or not run_dir.is_dir():
        return False
    try:
        with FolderLock(run_dir):
            current = read_summary(run_dir)
            if current and current.get("status") == "complete":
                log.warning("%s: not recording the failure over a complete %s", run_dir, SUMMARY)
                return False
            write_text(run_dir / SUMMARY, summary_text({
                "status": "failed", "error": one_line(error), "log": str(run_dir / "launch.log")}))
            return True
    except FolderInUse as e:
        log.warning("not recording the failure: %s", e)
    except OSError as e:
        log.warning("could not record the failure in %s: %s", run_dir, e)
    return False


def folder_identity(run_dir) -> dict | None:
    """The fingerprint of the config the folder's run was made with (grok.checkpoint.fingerprint
    of its config.yaml), or None if it has no readable one."""
    from grok.checkpoint import fingerprint

    try:
        return fingerprint(OmegaConf.load(Path(run_dir) / CONFIG))
    except Exception:  # noqa: BLE001 - missing or unreadable: no identity to compare
        return None


def job_status(run_dir, identity: dict | None = None) -> tuple[str, str]:
    """(status, verdict or what went wrong) of a job's folder; with `identity` (the job's config
    fingerprint), a folder that holds a run of another config is "refused"."""
    from grok.checkpoint import diff

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "not run", "no folder: the job never started"
    who = holder(run_dir)
    if who:
        return "running", f"in use by {who}"
    found = folder_identity(run_dir) if identity is not None else None
    if found is not None and diff(found, identity):
        return "refused", (f"the folder holds a run of another config (differs in "
                           f"{', '.join(diff(found, identity))}); nothing written there")
    s = read_summary(run_dir)
    if s is None:
        if (run_dir / CHECKPOINT).exists():
            return "unfinished", f"no readable {SUMMARY}; relaunch to resume from {CHECKPOINT}"
        return "unfinished", f"no readable {SUMMARY}"
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
