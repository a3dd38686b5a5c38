"""Where a run's results go: a local record in its folder (always) and W&B (when asked).

The local record is the source of truth: every file is replaced atomically, and a W&B failure
only disables W&B for that run.
"""

import json
import logging
import os
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"


def atomic_write(path: Path, write) -> None:
    """Write through `write(file)` to a temporary file in the same folder, then rename over
    `path`: a reader (or a resumed run) sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


class LocalRecord:
    """config.yaml (resolved); metrics.jsonl, one JSON object per eval (read it with
    `pd.read_json(path, lines=True, precise_float=True)`: without precise_float pandas rounds
    the last digits); summary.json, written once at the end."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: DictConfig) -> None:
        write_text(self.dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))

    def rewrite_metrics(self, rows: list[dict]) -> None:
        """Replace the metrics file with exactly `rows` (on resume, drop rows past the checkpoint)."""
        write_text(self.dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict) -> None:
        # A kill mid-line leaves at most one torn last line, which resume rewrites away.
        with open(self.dir / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_summary(self, summary: dict) -> None:
        write_text(self.dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


class WandbRun:
    """One W&B run per job; any W&B error is logged and turns W&B off for this run."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_id: str):
        self.run = None
        if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=cfg.logger.project, entity=cfg.logger.entity, group=str(cfg.sweep_id),
                job_type="train", dir=str(run_dir), mode=cfg.logger.mode, id=run_id,
                resume="allow", config=OmegaConf.to_container(cfg, resolve=True),
                reinit="create_new",  # the runs of a pack are open at once, one W&B run each
                settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
            )
        except Exception as e:  # noqa: BLE001 - W&B must never cost the local record
            log.warning("W&B disabled for this run: %s", e)

    def log(self, row: dict, step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(row, step=step)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B logging failed, disabling it: %s", e)
                self.run = None

    def finish(self, summary: dict | None = None) -> None:
        if self.run is None:
            return
        try:
            if summary:
                self.run.summary.update({k: v for k, v in summary.items() if v is not None})
            self.run.finish()
        except Exception as e:  # noqa: BLE001
            log.warning("W&B finish failed: %s", e)
        self.run = None


def record_failure(run_dir, error: BaseException) -> None:
    """Leave a failed job's folder saying so, for the sweep report and the analysis tables."""
    write_text(Path(run_dir) / SUMMARY, json.dumps({
        "status": "failed", "error": f"{type(error).__name__}: {error}",
        "log": str(Path(run_dir) / "launch.log")}, indent=2) + "\n")


def sweep_status(sweep_dir) -> list[tuple[str, str, str]]:
    """(job folder, status, verdict or error) for every numbered job folder of a sweep."""
    rows = []
    for job in sorted((p for p in Path(sweep_dir).iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name)):
        try:
            s = json.loads((job / SUMMARY).read_text())
        except (OSError, ValueError):
            rows.append((str(job), "unfinished", f"no readable {SUMMARY}"))
            continue
        rows.append((str(job), s.get("status", "?"), s.get("verdict") or s.get("error", "")))
    return rows


class SweepReport(Callback):
    """Remembers where a multirun writes, so launch.py can report every job once it ends,
    including when Hydra stops with an error (it then skips on_multirun_end)."""

    sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepReport.sweep_dir = str(config.hydra.sweep.dir)
