#!/usr/bin/env python
"""Cost of the default progress measures as a fraction of training time, at the reference config.

    python bench/measures_cost.py [--reps N] [--key-freqs K] [overrides...]

Times, in one process and interleaved: the training step (as grok.train runs it), the cheap
measures (weights only), and the full measures (a forward pass over all p*p inputs, key
frequencies, Fourier norms, restricted and excluded loss), both as the trainer calls them
(`task.measures` on the run's view of its pack, with the task's p x p probe). A freshly
initialised model has no key frequencies, so the full set is timed with `--key-freqs` of them
forced in (as `measures.key_freqs`; an upper bound for a grokked model, which typically has 3-7).
The fraction is the measures' time per training step under the `measures` config (cheap every
`every` evals, full every `full_every` evals, eval every `train.eval_every` steps) over the step
time. Prints figures; never fails on them.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from grok.checks import check as check_run_config  # noqa: E402
from grok.data import PackBatch, make_data  # noqa: E402
from grok.models import build_model  # noqa: E402
from grok.train import make_optimizer  # noqa: E402
from grok.train import step as train_step  # noqa: E402


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--key-freqs", type=int, default=5)
    ap.add_argument("overrides", nargs="*", default=["experiment=nanda"])
    args = ap.parse_args()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    task = check_run_config(cfg)
    torch.set_flush_denormal(True)
    data = make_data(task, cfg)
    x, y = data.train
    probe = task.probe(data, torch.device("cpu"))  # the p x p grid, as grok.runs.Run builds it
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, task)
    pack = type(model).stack([model])  # the trainer's pack of one; measures read its run view
    opt = make_optimizer([cfg], dict(pack.named_parameters()))
    batch = PackBatch.pad([(x, y)])
    model = pack.run(0)
    # what a grokked model adds: the two op-specific losses (linear ops) on its key frequencies
    forced = OmegaConf.merge(cfg.measures, {"key_freqs": list(range(1, args.key_freqs + 1))})

    def step():
        train_step(pack, opt, batch, at=task.positions)

    def cheap():
        task.measures(model, probe, False, cfg.measures)

    def full():
        task.measures(model, probe, True, forced)

    for fn in (step, cheap, full):
        fn()  # warm up
    t_step, t_cheap, t_full = [], [], []
    for _ in range(args.reps):
        t_step += timed(step, 10)
        t_cheap += timed(cheap, 5)
        t_full += timed(full, 1)
    ms = {k: 1e3 * statistics.median(v) for k, v in
          (("step", t_step), ("cheap", t_cheap), ("full", t_full))}
    m, ev = cfg.measures, cfg.train.eval_every
    per_step = (ms["cheap"] / (ev * m.every) if m.every else 0) + \
               (ms["full"] / (ev * m.full_every) if m.full_every else 0)
    print(f"config: {' '.join(args.overrides)} (p={cfg.p}, {len(y)} train pairs, "
          f"d_model {cfg.model.d_model}), {torch.get_num_threads()} threads")
    print(f"training step          {ms['step']:8.2f} ms (median of {len(t_step)})")
    print(f"cheap measures         {ms['cheap']:8.2f} ms, every {m.every} eval(s) of {ev} steps")
    print(f"full measures          {ms['full']:8.2f} ms, every {m.full_every} evals "
          f"({args.key_freqs} key freqs forced)")
    print(f"measures cost: {per_step:.3f} ms per step = {100 * per_step / ms['step']:.2f}% "
          f"of training time")


if __name__ == "__main__":
    main()
