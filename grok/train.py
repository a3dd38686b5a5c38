"""Full-batch training of one run: exact, resumable, and recorded at every eval point.

A run is a function of its config: the checkpoint holds everything the loop depends on (weights,
optimizer and schedule state, RNG state, step, metrics so far), so a run killed at any point and
restarted in the same folder ends bit-identical (on CPU) to one that never stopped.
"""

import contextlib
import json
import logging
import math
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from grok import measures
from grok.config import validate
from grok.data import full_grid, make_dataset, vocab_size
from grok.model import build_model
from grok.tracking import CHECKPOINT, SUMMARY, LocalRecord, WandbRun, atomic_write
from grok.verdict import settled, verdict

log = logging.getLogger(__name__)

# Keys that may change between a checkpoint and its resume without changing the run's results.
RESUMABLE_CHANGES = ("sweep_id", "logger", "train.steps", "train.early_stop_after", "train.threads")


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the log-softmax in float64: in float32 the loss of a well-fit point
    floors near 1e-7, its gradient rounds to zero and Adam turns that into loss spikes."""
    return F.cross_entropy(logits.double(), labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).double().mean().item()


def make_optimizer(cfg_opt: DictConfig, model: torch.nn.Module):
    params = list(model.parameters())
    if cfg_opt.name == "sgd":
        opt = torch.optim.SGD(params, lr=cfg_opt.lr, momentum=cfg_opt.momentum,
                              weight_decay=cfg_opt.weight_decay)
    else:
        cls = torch.optim.AdamW if cfg_opt.name == "adamw" else torch.optim.Adam
        opt = cls(params, lr=cfg_opt.lr, betas=tuple(cfg_opt.betas),
                  weight_decay=cfg_opt.weight_decay, fused=True)
    warmup = cfg_opt.warmup_steps
    # Linear warmup that starts at lr/warmup (Nanda's starts at 0, wasting step 0).
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return opt, sched


@contextlib.contextmanager
def deferred_signals(signals=(signal.SIGUSR2, signal.SIGTERM)):
    """Hold preemption signals (SLURM sends USR2 before a time limit or preemption; submitit's
    handler then requeues the job and exits) until the loop is between steps, so the run can
    checkpoint its exact state first. Yields the list of held signals; `release` hands them on."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending, lambda: None
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def hold(signum, frame):
        pending.append(signum)

    def release():
        for s, h in previous.items():
            signal.signal(s, h)
        for s in dict.fromkeys(pending):
            log.warning("received %s: checkpointed, handing on", signal.Signals(s).name)
            signal.raise_signal(s)

    for s in signals:
        signal.signal(s, hold)
    try:
        yield pending, release
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _fingerprint(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUMABLE_CHANGES:
        *parents, last = key.split(".")
        node = c
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return c


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class Evaluator:
    """Train/test metrics at every eval, and the progress measures at the intervals of the
    `measures` config: the cheap, weights-only set every `every` evals, the full set (one
    forward over all p*p inputs) every `full_every` evals and at the end."""

    def __init__(self, cfg, op, data, test, device):
        self.cfg, self.op = cfg.measures, op
        self.x_te, self.y_te = test
        self.p = cfg.p
        if self.cfg.full_every:
            tokens, labels, train_mask = full_grid(op, cfg.p, cfg.model.layout, data)
            self.grid = tokens.to(device), labels.to(device), train_mask.to(device)

    def __call__(self, model, step, logits, loss, y_tr, lr, n_evals, last) -> dict:
        with torch.no_grad():
            test_logits = model(self.x_te)
            row = {"step": step, "train_loss": loss.item(), "train_acc": accuracy(logits, y_tr),
                   "test_loss": loss_fn(test_logits, self.y_te).item(),
                   "test_acc": accuracy(test_logits, self.y_te), "lr": lr}
        every, full_every = self.cfg.every, self.cfg.full_every
        full = bool(full_every) and (n_evals % full_every == 0 or last)
        if full or (every and n_evals % every == 0):
            row.update(self.measures(model, full))
        return row

    def measures(self, model, full: bool) -> dict:
        return measures.compute(model, self.p, *(self.grid if full else (None,) * 3), self.op,
                                eta=self.cfg.eta, full=full, fixed_keys=self.cfg.key_freqs)


def _restore(ckpt_path, cfg, model, opt, sched):
    """The state saved in `ckpt_path`, loaded into model/opt/sched, or None if there is none."""
    if not ckpt_path.exists():
        return None
    ck = torch.load(ckpt_path, map_location=next(model.parameters()).device, weights_only=False)
    changed = _diff(ck["fingerprint"], _fingerprint(cfg))
    if changed:
        raise RuntimeError(f"{ckpt_path} was made by another config (differs in "
                           f"{', '.join(changed)}); use a new run folder")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    return ck


def run(cfg: DictConfig, run_dir) -> dict:
    """Train (or resume, or return the finished result of) the run configured by `cfg` in `run_dir`."""
    # Denormal floats in tiny late-training gradients cost ~5x. The setting is process-wide, so
    # it is undone afterwards (torch's default is off; a sweep's next job sets it again).
    torch.set_flush_denormal(True)
    try:
        return _run(cfg, run_dir)
    finally:
        torch.set_flush_denormal(False)


def _run(cfg: DictConfig, run_dir) -> dict:
    op = validate(cfg)
    run_dir = Path(run_dir)
    record = LocalRecord(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = torch.device(tc.device)

    data = make_dataset(op, cfg.p, cfg.frac, cfg.seed, cfg.model.layout)
    x_tr, y_tr = (t.to(device) for t in data.train)
    evaluate = Evaluator(cfg, op, data, [t.to(device) for t in data.test], device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, vocab_size(cfg.model.layout, cfg.p), cfg.p).to(device)
    opt, sched = make_optimizer(cfg.optimizer, model)

    ck = _restore(ckpt_path, cfg, model, opt, sched)
    if ck and ck["done"] and (ck["early_stopped"] or ck["diverged"] or ck["step"] >= tc.steps):
        log.info("already finished: %s", run_dir / SUMMARY)
        return json.loads((run_dir / SUMMARY).read_text())
    step, metrics, elapsed, wandb_id = ((ck["step"], ck["metrics"], ck["elapsed"], ck["wandb_id"])
                                        if ck else (0, [], 0.0, secrets.token_hex(4)))
    if ck:
        log.info("resuming from step %d (%s)", step, ckpt_path)
    record.write_config(cfg)
    record.rewrite_metrics(metrics)  # drops rows logged after the checkpoint by a killed run
    wandb_run = WandbRun(cfg, run_dir, wandb_id)
    early_stopped = diverged = False

    def save_checkpoint(done=False):
        state = {"done": done, "early_stopped": early_stopped, "diverged": diverged,
                 "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "rng": torch.get_rng_state(), "step": step, "metrics": metrics,
                 "elapsed": elapsed + time.perf_counter() - t0, "wandb_id": wandb_id,
                 "fingerprint": _fingerprint(cfg)}
        atomic_write(ckpt_path, lambda f: torch.save(state, f))

    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s mod %d, frac %.3g (%d train / %d test), seed %d, %s model (%d params), %s",
             op.pretty, cfg.p, cfg.frac, len(y_tr), len(data.test_idx), cfg.seed, cfg.model.name,
             n_params, cfg.optimizer.name)
    tty = sys.stderr.isatty()
    bar = tqdm(total=tc.steps, initial=step, disable=not tty, dynamic_ncols=True, leave=False)
    t0, start_step = time.perf_counter(), step
    with deferred_signals() as (pending, release):
        while True:
            if pending:  # preempted: save the exact state, then let the scheduler's handler act
                save_checkpoint()
                release()
                pending.clear()
            # (the second condition: a finished run resumed with a longer budget)
            is_eval = (step % tc.eval_every == 0 or step == tc.steps) and not (
                metrics and metrics[-1]["step"] == step)
            if step == tc.steps and not is_eval:
                break
            logits = model(x_tr)
            loss = loss_fn(logits, y_tr)
            if is_eval:
                row = evaluate(model, step, logits, loss, y_tr, sched.get_last_lr()[0],
                               len(metrics), last=step == tc.steps)
                early_stopped = tc.early_stop_after is not None and settled(
                    [*metrics, row], cfg.grok.threshold, tc.early_stop_after)
                if early_stopped and cfg.measures.full_every and "key_freqs" not in row:
                    row.update(evaluate.measures(model, full=True))  # as at a budget's end
                metrics.append(row)
                record.append_metrics(row)
                wandb_run.log(row, step=step)
                bar.set_postfix(train=f"{row['train_acc']:.3f}", test=f"{row['test_acc']:.3f}",
                                loss=f"{row['train_loss']:.2e}", refresh=False)
                if not tty and (len(metrics) % 10 == 1 or step == tc.steps):
                    log.info("step %6d  train %.3f  test %.3f  train loss %.3e  test loss %.3e",
                             step, row["train_acc"], row["test_acc"], row["train_loss"],
                             row["test_loss"])
                if not math.isfinite(row["train_loss"]):  # nothing more to learn from this run
                    diverged = True
                    log.warning("train loss is %s at step %d: stopping", row["train_loss"], step)
                    break
                if early_stopped:
                    break
            if step == tc.steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if step % tc.checkpoint_every == 0:
                save_checkpoint()
    bar.close()
    wall = elapsed + time.perf_counter() - t0
    summary = {
        "status": "complete",
        **verdict(metrics, cfg.grok.threshold, cfg.grok.delay_ratio),
        "steps": step, "early_stopped": early_stopped, "diverged": diverged,
        "final_train_acc": metrics[-1]["train_acc"], "final_test_acc": metrics[-1]["test_acc"],
        "final_train_loss": metrics[-1]["train_loss"], "final_test_loss": metrics[-1]["test_loss"],
        "wall_time_s": wall,
        "steps_per_s": (step - start_step) / max(time.perf_counter() - t0, 1e-9),
        "op": op.canonical, "op_pretty": op.pretty, "task": cfg.task.name, "p": cfg.p,
        "frac": cfg.frac, "seed": cfg.seed, "model": cfg.model.name,
        "optimizer": cfg.optimizer.name, "n_train": len(y_tr), "n_test": len(data.test_idx),
        "n_params": n_params, "resumed_from": start_step or None, "sweep_id": str(cfg.sweep_id),
    }
    record.write_summary(summary)
    save_checkpoint(done=True)  # final weights; also makes re-running a finished job a no-op
    wandb_run.finish(summary)
    log.info("%s: memorised at %s, grok step %s, best test acc %.3f (%.1f s, %.0f steps/s)",
             summary["verdict"], summary["memorisation_step"], summary["grok_step"],
             summary["best_test_acc"], wall, summary["steps_per_s"])
    return summary
