#!/usr/bin/env python
"""Milliseconds per full-batch training step: Transformer(impl="tables") against impl="full".

    PYTHONPATH=. python bench/step_time.py [--layout nanda|furuta] [--p P] [--frac F]
                                           [--d-model D] [--steps N] [--threads T]

Defaults are the reference config of Nanda et al. (`experiment=nanda`: x+y mod 113, frac 0.3 ->
3831 train pairs, d_model 128, 4 heads x 32, d_mlp 512, learned positions, MLP biases, AdamW lr
1e-3 betas (0.9, 0.98) wd 1). The config is composed with Hydra from conf/, the data, model,
loss and optimizer come from grok.data / grok.models / grok.train, so the step timed is the
trainer's step (grok.train.step on a pack of one): forward, float64 cross-entropy, backward,
optimizer update. Both impls start from the same weights and are timed in the same process,
interleaved in short blocks so machine noise lands on both, after a warmup. A check line reports
the max abs difference of logits and gradients between the impls in float64.

This is a benchmark, not a test: it prints numbers and never fails on them.
"""

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from grok.checks import check as check_run_config  # noqa: E402
from grok.data import PackBatch, make_data  # noqa: E402
from grok.losses import loss_fn  # noqa: E402
from grok.models import build_model  # noqa: E402
from grok.models.tables import Transformer  # noqa: E402
from grok.train import make_optimizer  # noqa: E402
from grok.train import step as train_step  # noqa: E402

IMPLS = ("tables", "full")


def compose_cfg(args):
    from hydra import compose, initialize_config_dir

    overrides = [f"experiment={args.layout}", "logger=none"]
    if args.p is not None:
        overrides.append(f"p={args.p}")
    if args.frac is not None:
        overrides.append(f"frac={args.frac}")
    if args.d_model is not None:  # keep the reference proportions: d_head = d/heads, d_mlp = 4d
        overrides += [f"model.d_model={args.d_model}", f"model.d_mlp={4 * args.d_model}",
                      f"model.d_head={max(1, args.d_model // 4)}"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return cfg


def make_models(cfg, task, dtype=torch.float32):
    """One model per impl with identical weights (seeded as grok.runs.Run.init_model does)."""
    models = {}
    for impl in IMPLS:
        torch.manual_seed(cfg.seed)
        c = copy.deepcopy(cfg)
        c.model.impl = impl
        models[impl] = build_model(c, task).to(dtype)
        assert isinstance(models[impl], Transformer) and models[impl].impl == impl
    models["full"].load_state_dict(models["tables"].state_dict())
    return models


def check(cfg, task, x, y):
    """Max abs diff of logits and of every gradient between the impls, in float64."""
    models = make_models(cfg, task, torch.float64)
    logits, grads = {}, {}
    for impl, m in models.items():
        out = m.logits_at(x, task.positions)                       # (N, K, C)
        loss_fn(out.flatten(0, 1), y.flatten()).backward()
        logits[impl] = out.detach()
        grads[impl] = {n: p.grad for n, p in m.named_parameters()}
    dl = (logits["tables"] - logits["full"]).abs().max().item()
    dg = max((grads["tables"][n] - grads["full"][n]).abs().max().item() for n in grads["tables"])
    return dl, dg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", choices=("nanda", "furuta"), default="nanda",
                    help="experiment config to compose (nanda: reference; furuta: p=97, no pos/bias)")
    ap.add_argument("--p", type=int, default=None, help="modulus (default: the experiment's)")
    ap.add_argument("--frac", type=float, default=None, help="train fraction (default: the experiment's)")
    ap.add_argument("--d-model", type=int, default=None,
                    help="d_model (d_head = d/4, d_mlp = 4d; default: the experiment's)")
    ap.add_argument("--steps", type=int, default=60, help="measured steps per impl")
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured steps per impl first")
    ap.add_argument("--block", type=int, default=5, help="steps per impl before switching")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="seconds for the measured loop; stops early (after a full round) past it")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as grok/train.py

    cfg = compose_cfg(args)
    task = check_run_config(cfg)
    x, y = make_data(task, cfg).train                              # tokens (N, 3), targets (N, 1)
    m = cfg.model
    print(f"{task.op.pretty} mod {cfg.p}, frac {cfg.frac} -> {len(y)} train pairs; layout {m.layout}, "
          f"d_model {m.d_model}, {m.n_heads} heads x {m.d_head}, d_mlp {m.d_mlp}, "
          f"pos_embed {m.pos_embed}, mlp_bias {m.mlp_bias}; {cfg.optimizer.name} lr "
          f"{cfg.optimizer.lr} betas {tuple(cfg.optimizer.betas)} wd {cfg.optimizer.weight_decay}; "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")

    dl, dg = check(cfg, task, x, y)
    print(f"check float64 tables vs full: max |d logits| {dl:.2e}, max |d grad| {dg:.2e}")

    models = {impl: Transformer.stack([m]) for impl, m in make_models(cfg, task).items()}  # packs of one
    opts = {impl: make_optimizer([cfg], dict(mod.named_parameters())) for impl, mod in models.items()}
    batch = PackBatch.pad([(x, y)])

    def step(impl):
        t0 = time.perf_counter()
        train_step(models[impl], opts[impl], batch, at=task.positions)
        return time.perf_counter() - t0

    for impl in IMPLS:
        for _ in range(args.warmup):
            step(impl)
    times = {impl: [] for impl in IMPLS}
    block = max(1, args.block)
    i, t_start = 0, time.perf_counter()
    while any(len(t) < args.steps for t in times.values()):
        if i and i % 2 == 0 and time.perf_counter() - t_start > args.budget:
            print(f"budget of {args.budget:.0f} s spent: {len(times['tables'])} / "
                  f"{len(times['full'])} steps measured (machine busy?)")
            break
        order = IMPLS if i % 2 == 0 else IMPLS[::-1]  # alternate who goes first, too
        for impl in order:
            for _ in range(min(block, args.steps - len(times[impl]))):
                times[impl].append(step(impl))
        i += 1

    print(f"{'impl':<8}{'median ms':>11}{'p10 ms':>9}{'p90 ms':>9}{'steps/s':>9}")
    med = {}
    for impl in IMPLS:
        ms = sorted(t * 1e3 for t in times[impl])
        q = statistics.quantiles(ms, n=10)
        med[impl] = statistics.median(ms)
        print(f"{impl:<8}{med[impl]:>11.2f}{q[0]:>9.2f}{q[-1]:>9.2f}{1e3 / med[impl]:>9.1f}")
    print(f"speedup tables vs full: {med['full'] / med['tables']:.2f}x")


if __name__ == "__main__":
    main()
