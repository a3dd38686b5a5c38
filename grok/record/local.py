"""A run's local record in its folder, the source of truth: config.yaml (as trained),
metrics.jsonl, summary.json, Hydra's `.hydra/` files, and a failed job's summary."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from grok.record.files import CONFIG, METRICS, SUMMARY, disk_full, dumps, write_text
from grok.record.lock import FolderError, FolderInUse, FolderLock

log = logging.getLogger(__name__)


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
            raise disk_full(e, path) from None

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


def last_metrics_step(run_dir, tail: int = 1 << 20) -> int | None:
    """The step of metrics.jsonl's last whole row (read from the file's end), or None if there is
    none to read: missing, empty, torn or not a row."""
    try:
        with open(Path(run_dir) / METRICS, "rb") as f:
            start = max(0, f.seek(0, 2) - tail)
            f.seek(start)
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines[1:] if start else lines):  # the first may be cut by the seek
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    return None


def hydra_files(task_cfg: DictConfig) -> dict[str, str]:
    """What Hydra writes into a job folder before the job runs (`.hydra/`), for the run to write
    once it owns the folder: conf/config.yaml turns Hydra's own writing off (hydra.output_subdir),
    so that a launch refused by a folder writes nothing there. Call it inside the job (HydraConfig)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg
    return {".hydra/config.yaml": OmegaConf.to_yaml(task_cfg),
            ".hydra/hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


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


