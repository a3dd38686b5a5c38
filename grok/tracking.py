"""A run's W&B side (when asked). The local record (grok.record) is the source of truth: a W&B
failure only disables W&B for that run.

A killed process loses the rows wandb-core had not yet written to the run's transaction log (it
buffers a block, and a kill skips its flush). So a resumed run first logs again every row of its
checkpoint that the earlier transaction logs of its W&B run lack (`replay`): the W&B run then
holds every row metrics.jsonl holds, however the process died. Replaying from the local record,
rather than flushing at each checkpoint, needs no W&B internals and covers a SIGKILL, whose rows
since the last flush no flush could save.

Where: the runs of a sweep keep their W&B runs together in `<sweep>/wandb/` (`wandb_root`), so
`wandb sync`, `wandb sync --dry-run` and `wandb leet` run in the sweep folder (or given
`<sweep>/wandb`) find every run of it; a single run keeps its own in `<run>/wandb/`. A W&B run
is found by its id (kept in the checkpoint), in either place: a run resumed from before this
layout appends to the same W&B run.
"""

import logging
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig

import grok.wandb_view as view
from grok.figures import plot_run
from grok.record.files import CHECKPOINT, CONFIG, LAUNCH_LOG, METRICS, SUMMARY
from grok.record.local import as_trained
from grok.verdict import GROKKED, NO_DELAY, NOT_GENERALISED
from grok.wandb_offline import read_run

log = logging.getLogger(__name__)


class WandbRun:
    """One W&B run per job; any W&B error is logged and turns W&B off for this run. How it
    looks there (name, tags, metric definitions, histograms, files): grok.wandb_view."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_id: str, task=None, rows=()):
        """`rows`: a resumed run's rows so far (its checkpoint's), replayed where W&B lacks them."""
        self.run, self.cfg, self.dir = None, cfg, Path(run_dir)
        self.ops = tuple(task.groups) if task else ()  # keys of these go under W&B's ops/
        if cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
            return
        held = logged_steps(self.dir, run_id) if rows else set()  # before this process' own log
        try:
            import wandb

            self.run = wandb.init(
                project=cfg.logger.project, entity=cfg.logger.entity, group=str(cfg.sweep_id),
                job_type="train", dir=str(wandb_root(self.dir)), mode=cfg.logger.mode, id=run_id,
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
        self.replay(rows, held)

    def replay(self, rows, held: set[int]) -> None:
        """Log the `rows` whose step W&B does not hold (`held`), in order: what a killed process
        logged but never wrote out."""
        missing = [r for r in rows if r["step"] not in held]
        if missing and self.run is not None:
            log.info("W&B: logging again %d row(s) a killed process lost (steps %d to %d)",
                     len(missing), missing[0]["step"], missing[-1]["step"])
        for row in missing:
            self.log(row, step=row["step"])

    def _save(self, path: Path) -> None:
        """A copy of `path` among the run's W&B files (a copy: the W&B run stays whole if the
        run folder moves before `wandb sync`)."""
        files = Path(self.run.dir)
        if path.parent != files:
            shutil.copyfile(path, files / path.name)
        self.run.save(str(files / path.name), base_path=str(files), policy="now")

    def log(self, row: dict, step: int) -> None:
        """One eval row at `step` (W&B turned off for this run on any error)."""
        if self.run is not None:
            try:
                self.run.log(view.wandb_row(row, self.ops), step=step)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B logging failed, disabling it: %s", e)
                self.run = None

    def finish(self, summary: dict | None = None) -> None:
        """Summary and verdict tag, the run's summary.json, launch.log (its log up to here) and
        plot (the figure `python -m analysis plots` draws) as files, the checkpoint as an
        artifact if `logger.log_checkpoint`."""
        if self.run is None:
            return
        try:
            if summary:
                # grok and memorisation steps stay even when null: "never reached" is a result
                self.run.summary.update({view.summary_key(k): v for k, v in summary.items()
                                         if v is not None or k in ("grok_step", "memorisation_step")})
                if summary.get("verdict"):
                    old = [t for t in self.run.tags if t not in (GROKKED, NO_DELAY, NOT_GENERALISED)]
                    self.run.tags = (*old, summary["verdict"])
            for name in (SUMMARY, LAUNCH_LOG):
                if (self.dir / name).exists():
                    self._save(self.dir / name)
            if summary and self.cfg.logger.get("log_plot", True) and (self.dir / METRICS).exists():
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




def wandb_root(run_dir: Path) -> Path:
    """The folder whose wandb/ holds this run's W&B runs: the sweep's, for a job of a sweep
    (every sweeper writes multirun.yaml in the sweep folder), else the run folder."""
    run_dir = Path(run_dir)
    return run_dir.parent if (run_dir.parent / "multirun.yaml").is_file() else run_dir


def run_files(run_dir: Path, run_id: str) -> list[Path]:
    """The transaction logs of the W&B run `run_id`, one per process that logged to it, oldest
    first: in `wandb_root`/wandb, and in `run_dir`/wandb where a sweep's job kept them before its
    runs were kept together. W&B names each process' folder `[offline-]run-<time>-<id>`, with
    `-1`, `-2`, ... added where a process of the same second had the name (a run continued or
    resumed within a second of its last start)."""
    roots = dict.fromkeys([Path(run_dir) / "wandb", wandb_root(run_dir) / "wandb"])
    name = re.compile(rf"(?:offline-)?run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    found = {}
    for root in roots:
        for p in root.glob(f"*run-*-{run_id}*/run-{run_id}.wandb"):
            m = name.fullmatch(p.parent.name)
            if m and not p.parent.is_symlink():  # not wandb's latest-run link
                found[p] = (m[1], int(m[2] or 0))
    return sorted(found, key=found.get)


def logged_steps(run_dir: Path, run_id: str) -> set[int]:
    """The steps the W&B run `run_id` holds in its transaction logs under `run_dir`. A file is
    data: one that cannot be read holds no step."""
    steps = set()
    for path in run_files(run_dir, run_id):
        try:
            steps.update(row["_step"] for row in read_run(path)["history"])
        except Exception as e:  # noqa: BLE001 - empty (killed before its header) or damaged
            log.info("W&B: %s unreadable (%s): its rows are logged again", path, e)
    return steps
