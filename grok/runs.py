"""One run's life inside a pack: its data, its records, its evaluations and when it stops.

The pack trainer (grok.train) owns the weights and the step; a `Run` owns everything that is one
run's own: config, train/test split, progress measures, metrics so far, W&B run, the stop
decision (verdict settled, loss non-finite, budget spent) and the summary and checkpoint it
leaves in its folder. A run records exactly what it would record trained alone.
"""

import logging
import math
import secrets
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

import grok.init as init_
from grok.checks import check_run
from grok.data import make_data
from grok.models import build_model
from grok.record import checkpoint
from grok.record.checkpoint import drop_snapshots_after, save_snapshot, snapshot_path
from grok.record.files import CHECKPOINT, CONFIG, METRICS, SUMMARY, jsonable, remove_leftovers
from grok.record.identity import changes, fingerprint
from grok.record.local import LocalRecord, read_summary
from grok.record.lock import FolderLock, RunRefused
from grok.record.status import folder_identity
from grok.tracking import WandbRun, logged_steps, run_files
from grok.verdict import GROKKED, settled, verdict

log = logging.getLogger("grok.train")


def reading(g) -> dict:
    """The verdict's parameters from a config's `grok` group (grok.verdict.verdict's keywords)."""
    return {"threshold": g.threshold, "delay_ratio": g.delay_ratio, "onset": g.onset,
            "window": g.window, "criterion": g.criterion}


def group_curves(metrics: list[dict], groups) -> list[list[dict]]:
    """The whole's eval rows, then each group's as rows with plain train_acc/test_acc keys (what
    the verdict and the early stop read): a mixture stops once every op has settled."""
    out = [metrics]
    for name in groups:
        out.append([{"step": m["step"], "train_acc": m[f"train_acc/{name}"],
                     "test_acc": m[f"test_acc/{name}"]} for m in metrics if f"test_acc/{name}" in m])
    return out


class Run:
    """A run of a pack. `finished` holds the summary of a run that needs no training.

    A run claims its folder before it writes anything there. A folder whose checkpoint (or,
    without one, config.yaml) was made by another config refuses it (RunRefused), a folder
    another process works in refuses it (FolderInUse), and in both cases nothing is written
    there. Otherwise the run holds the folder's lock (grok.record.lock) until `close`, removes what
    killed writes left, and resumes or starts. A finished run is not trained again; its
    summary.json and metrics.jsonl, if lost or damaged, are rebuilt from its checkpoint.
    `files` are further files to write once training starts (Hydra's `.hydra/`)."""

    def __init__(self, cfg: DictConfig, run_dir, device: torch.device, dtype: torch.dtype,
                 files: dict[str, str] | None = None, task=None):
        self.cfg = cfg
        # the one task of this job (`task`, if the trainer built it); the init plan: weights
        # taken from another run, frozen ones
        self.task, self.init = check_run(cfg, task=task)
        self.dir = Path(run_dir)
        self._log = {"run": str(self.dir)}  # routes this run's log lines to its own launch.log
        self.budget = cfg.train.steps
        self.files = files or {}
        self.lock = None
        self.told_skipped = False  # the log line on measures this model lacks: once
        self.refuse_another_config()  # reads only
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = FolderLock(self.dir)
        try:
            self._open(device)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let go of the folder (its lock)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def refuse_another_config(self) -> None:
        try:
            checkpoint.load(self.dir / CHECKPOINT, self.cfg)
        except RunRefused:
            raise
        except Exception:  # noqa: BLE001 - unreadable: reported when read again, under the lock
            return
        if not (self.dir / CHECKPOINT).exists():
            found = folder_identity(self.dir)
            changed = found is not None and changes(found, fingerprint(self.cfg))
            if changed:
                raise checkpoint.refusal(self.dir, changed)

    def _open(self, device: torch.device) -> None:
        cfg = self.cfg
        self.data = make_data(self.task, cfg)
        self.ck = ck = checkpoint.load(self.dir / CHECKPOINT, cfg)
        self.finished, self.end_only = None, []
        done = read_summary(self.dir)
        if ck is None and done and done.get("status") == "complete":
            raise RunRefused(f"{self.dir} holds a complete run without its {CHECKPOINT}: it cannot be "
                             f"continued or checked; refused, nothing written there: use another folder")
        for p in remove_leftovers(self.dir):
            log.info("%s: removed %s, left by a killed write", self.dir, p.name, extra=self._log)
        self.record = LocalRecord(self.dir)
        self.init_record = self.provenance(ck)
        if ck and ck["done"] and (ck["early_stopped"] or ck["diverged"] or ck["step"] >= self.budget):
            self.finished = self.restore(ck)
            return
        if ck and ck["step"] > self.budget:
            raise RuntimeError(f"{self.dir / CHECKPOINT} is at step {ck['step']}, past "
                               f"train.steps={self.budget}: raise train.steps to resume it")
        self.step, self.metrics, self.elapsed, self.wandb_id = (
            (ck["step"], ck["metrics"], ck["elapsed"], ck["wandb_id"]) if ck
            else (0, [], 0.0, secrets.token_hex(4)))
        if ck and ck["done"]:  # a finished run continued to a longer budget: as if never stopped
            for key in ck.get("end_only", ()):
                self.metrics[-1].pop(key, None)
        self.start_step = self.step
        self.early_stopped = self.diverged = False
        mc = cfg.measures
        self.probe = self.task.probe(self.data, device) if mc.every or mc.full_every else None

    def provenance(self, ck: dict | None) -> dict:
        """What the summary says of the run's start (grok.init.record), as recorded when it
        started and kept in its checkpoint. A source continued or replaced since does not change
        it: the run's weights (its frozen ones too) are still the ones it loaded then, so it
        resumes as if never stopped and says which source that was. Refusing instead would throw
        away a valid run for a change to another folder."""
        now = init_.record(self.cfg, self.init)
        kept = ck.get("init_record") if ck else None
        if kept is None:  # a fresh start, or a checkpoint from before the record was kept
            return now
        if now.get("init_source_hash") != kept.get("init_source_hash"):
            log.warning("%s: init.from %s has changed since this run started (step %s then, %s now); "
                        "keeping the source it loaded then", self.dir, kept.get("init_from"),
                        kept.get("init_source_step"), now.get("init_source_step"), extra=self._log)
        return kept

    def restore(self, ck: dict) -> dict:
        """The summary of the finished run `ck`; summary.json, metrics.jsonl and config.yaml are
        rebuilt from the checkpoint where missing or damaged. A complete summary.json is kept if
        it is of the checkpoint's step; one an earlier budget wrote (a continuation killed between
        its final checkpoint and its summary) is the checkpoint's summary's to replace."""
        summary = read_summary(self.dir)
        if not summary or summary.get("status") != "complete" or summary.get("steps") != ck["step"]:
            summary = jsonable(ck.get("summary") or self.summary(
                ck["metrics"], step=ck["step"], early_stopped=ck["early_stopped"],
                diverged=ck["diverged"], wall=ck["elapsed"], steps_per_s=None,
                n_params=sum(v.numel() for v in ck["model"].values()), resumed_from=None))
            self.record.write_summary(summary)
            log.warning("%s: rebuilt %s from %s", self.dir, SUMMARY, CHECKPOINT, extra=self._log)
        try:
            current = (self.dir / METRICS).read_text()
        except OSError:
            current = None
        if current != LocalRecord.metrics_text(ck["metrics"]):
            self.record.rewrite_metrics(ck["metrics"])
            log.warning("%s: rebuilt %s from %s", self.dir, METRICS, CHECKPOINT, extra=self._log)
        if not (self.dir / CONFIG).exists():
            self.record.write_config(self.cfg)
        self.finish_wandb(ck, summary)
        log.info("already finished: %s", self.dir / SUMMARY, extra=self._log)
        return summary

    def finish_wandb(self, ck: dict, summary: dict) -> None:
        """A run killed after its final checkpoint, before its W&B run was finished: that W&B run
        gets the rows it lacks and its summary. Only a W&B run this folder holds: a run trained
        without W&B gets none afterwards."""
        if self.cfg.logger.name != "wandb" or self.cfg.logger.mode == "disabled":
            return
        if not run_files(self.dir, ck["wandb_id"]):
            return
        held = logged_steps(self.dir, ck["wandb_id"])
        if all(row["step"] in held for row in ck["metrics"]):
            return
        WandbRun(self.cfg, self.dir, ck["wandb_id"], self.task, rows=ck["metrics"]).finish(summary)

    def init_model(self):
        """This run's model as it would start alone: seeded init, or the checkpoint's weights."""
        torch.manual_seed(self.cfg.seed)
        model = build_model(self.cfg, self.task)
        if self.ck:
            model.load_state_dict(self.ck["model"])
        else:
            init_.apply(model, self.init)
        return model

    def frozen(self) -> list[str]:
        """Parameters that never change (init.freeze)."""
        return self.init["freeze"] if self.init else []

    def begin(self) -> None:
        """Write the config, drop metrics logged after the checkpoint by a killed run, open W&B."""
        if self.ck:
            log.info("%s: resuming from step %d", self.dir, self.step, extra=self._log)
        self.record.write_files(self.files)
        # Snapshots past the checkpoint are a killed run's (written again, identical), and a
        # finished run continued drops its end-of-run one: a longer run would not have it.
        n = self.cfg.train.get("snapshot_every")
        drop_snapshots_after(self.dir, self.step, also_at=bool(
            self.ck and self.ck["done"] and not (n and self.step % n == 0)))
        self.record.write_config(self.cfg)
        self.record.rewrite_metrics(self.metrics)
        # a resumed run logs again the rows a killed process never wrote out to W&B
        self.wandb = WandbRun(self.cfg, self.dir, self.wandb_id, self.task,
                              rows=self.metrics if self.ck else ())
        if self.init and self.wandb.run is not None:  # the source's path and verdict, beside init.*
            try:
                self.wandb.run.config.update({"init_source": self.init_record},
                                             allow_val_change=True)
            except Exception as e:  # noqa: BLE001 - W&B must never cost the local record
                log.warning("W&B config update failed: %s", e, extra=self._log)
        self.t0 = time.perf_counter()

    # -- evaluation and the stop policy -------------------------------------------------------

    def due(self) -> bool:
        """Evaluate at this step? Every eval_every steps and at the budget's end, once per step
        (a finished run resumed with a longer budget has its last step's row already)."""
        s = self.step
        return (s % self.cfg.train.eval_every == 0 or s == self.budget) and not (
            self.metrics and self.metrics[-1]["step"] == s)

    def evaluate(self, model, row: dict) -> bool:
        """Log the eval `row` (step, losses, accuracies, lr) with the measures due now, using
        `model` (this run's weights). True if the run stops here."""
        mc, tc = self.cfg.measures, self.cfg.train
        n_evals, last = len(self.metrics), self.step == self.budget
        full = bool(mc.full_every) and n_evals % mc.full_every == 0
        row.update(self.task.scores(model, self.data))  # per group (a mixture's ops), if any
        if full or (mc.every and n_evals % mc.every == 0):
            row.update(self.measures(model, full))
        self.early_stopped = tc.early_stop_after is not None and all(
            settled(rows, self.cfg.grok.threshold, tc.early_stop_after, self.cfg.grok.window,
                    self.cfg.grok.criterion)
            for rows in group_curves([*self.metrics, row], self.task.groups))
        if (last or self.early_stopped) and mc.full_every and not full:
            # The full set at a run's end too. A run continued to a longer budget drops these
            # keys again (`end_only`): a longer run would not have measured them here.
            end = self.measures(model, full=True)
            self.end_only = [k for k in end if k not in row]
            row.update({k: end[k] for k in self.end_only})
        self.metrics.append(row)
        self.record.append_metrics(row)
        self.wandb.log(row, step=self.step)
        if len(self.metrics) % 10 == 1 or last:
            log.info("%s step %6d  train %.3f  test %.3f  train loss %.3e  test loss %.3e",
                     self.dir.name, self.step, row["train_acc"], row["test_acc"], row["train_loss"],
                     row["test_loss"], extra=self._log)
        if not math.isfinite(row["train_loss"]):  # nothing more to learn from this run
            self.diverged = True
            log.warning("%s: train loss is %s at step %d: stopping", self.dir, row["train_loss"],
                        self.step, extra=self._log)
        return self.diverged or self.early_stopped or last

    def measures(self, model, full: bool) -> dict:
        if not self.told_skipped:
            self.told_skipped = True
            for name, why in self.task.skipped_measures(model).items():
                log.info("%s: measure %s skipped: %s", self.dir.name, name, why, extra=self._log)
        return self.task.measures(model, self.probe, full, self.cfg.measures)

    def skipped(self, model) -> dict:
        """The summary's `measures_skipped` ({measure: why}), where measures are on and some of
        the task's do not apply to this run's model."""
        mc = self.cfg.measures
        why = self.task.skipped_measures(model) if mc.every or mc.full_every else {}
        return {"measures_skipped": why} if why else {}

    # -- what the run leaves in its folder ----------------------------------------------------

    def save(self, model, opt_state: dict, padded: tuple[int, int],
             done: bool = False, summary: dict | None = None) -> None:
        """This run's checkpoint; `model` is this run's single view (copied out of the pack),
        `padded` the pack's padded train and test lengths. A finished run's holds its summary."""
        checkpoint.save(self.dir / CHECKPOINT, {
            "done": done, "early_stopped": self.early_stopped, "diverged": self.diverged,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt_state, "step": self.step, "metrics": self.metrics,
            "elapsed": summary["wall_time_s"] if summary else self.wall(), "wandb_id": self.wandb_id,
            "padded": list(padded), "fingerprint": fingerprint(self.cfg),
            "end_only": self.end_only, **({"init_record": self.init_record} if self.init_record else {}),
            **({"summary": summary} if summary else {})})

    def snapshot_due(self) -> bool:
        """Keep the weights at this step? Every `train.snapshot_every` steps, step 0 included."""
        n = self.cfg.train.get("snapshot_every")
        return bool(n) and self.step % n == 0 and not snapshot_path(self.dir, self.step).exists()

    def snapshot(self, model) -> None:
        save_snapshot(self.dir, self.step, model)

    def wall(self) -> float:
        return self.elapsed + time.perf_counter() - self.t0

    def summary(self, m: list[dict], *, step: int, early_stopped: bool, diverged: bool, wall: float,
                steps_per_s: float | None, n_params: int, resumed_from: int | None) -> dict:
        cfg = self.cfg
        return {
            "status": "complete",
            **verdict(m, **reading(cfg.grok)),
            "steps": step, "early_stopped": early_stopped, "diverged": diverged,
            "final_train_acc": m[-1]["train_acc"], "final_test_acc": m[-1]["test_acc"],
            "final_train_loss": m[-1]["train_loss"], "final_test_loss": m[-1]["test_loss"],
            "wall_time_s": wall, "steps_per_s": steps_per_s,
            **self.task.record(), **({"frac": cfg.frac} if self.task.finite else {}),
            "seed": cfg.seed, "model": cfg.model.name,
            "optimizer": cfg.optimizer.name, "n_train": self.data.n_train,
            "n_test": len(self.data.test[1]), **self.task.stats(self.data), "n_params": n_params,
            "resumed_from": resumed_from, "sweep_id": str(cfg.sweep_id),
            **self.init_record, **self._per_group(m),
        }

    def _per_group(self, m: list[dict]) -> dict:
        """A mixture's verdict per op (`per_op`) and whether every op grokked."""
        if not self.task.groups:
            return {}
        per = {name: verdict(rows, **reading(self.cfg.grok))
               for name, rows in zip(self.task.groups, group_curves(m, self.task.groups)[1:])}
        return {"per_op": per, "all_grokked": all(v["verdict"] == GROKKED for v in per.values())}

    def finish(self, model, opt_state: dict, padded: tuple[int, int]) -> dict:
        """Summary, final checkpoint (which also makes re-running a finished job a no-op), W&B."""
        summary = self.summary(
            self.metrics, step=self.step, early_stopped=self.early_stopped, diverged=self.diverged,
            wall=self.wall(),
            steps_per_s=(self.step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9),
            n_params=sum(w.numel() for w in model.parameters()), resumed_from=self.start_step or None)
        summary.update(self.skipped(model))
        if self.cfg.train.get("snapshot_every") and not snapshot_path(self.dir, self.step).exists():
            self.snapshot(model)  # the last snapshot is the final model
        # The checkpoint first: once it says done, a summary.json lost or never written (a kill,
        # a full disk) is rebuilt from it, and a complete summary.json is never overwritten.
        self.save(model, opt_state, padded, done=True, summary=summary)
        self.record.write_summary(summary)
        self.wandb.finish(summary)
        log.info("%s: %s, memorised at step %s, grok step %s, best test acc %.3f (%.1f s, %.0f steps/s)",
                 self.dir, summary["verdict"], *("-" if summary[k] is None else summary[k]
                                                  for k in ("memorisation_step", "grok_step")),
                 summary["best_test_acc"], summary["wall_time_s"], summary["steps_per_s"], extra=self._log)
        self.finished = summary
        return summary
