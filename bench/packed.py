#!/usr/bin/env python
"""Run-steps per second of packs of R runs against the same runs trained one after another.

    python bench/packed.py [--device cpu|cuda] [--sizes 1,8,32] [--fracs 0.3,0.9] [--dtype float32]
                           [--tf32] [--threads T] [--steps N] [--budget S] [--check]
                           [--grok-share 0.5] [--early-steps 30000] [--steps-per-job N]

Config: seed 002's (`experiment=furuta`: p=97, Furuta model, AdamW lr 1e-3 betas (0.9, 0.98)
wd 1, no warmup), composed with Hydra from conf/. Run r of a pack has op OPS[r % len(OPS)]
(--ops; default four ops of the furuta table) and seed r // len(OPS); all runs of a pack share
one frac. Its model is seeded and built as grok.runs.Run.init_model does (`grok.models.build_model`:
the token-table Transformer for this config), the pack is `type(model).stack(...)` of them, the
optimizer `grok.train.make_optimizer`, the examples `grok.data.make_data` padded by `PackBatch.pad`,
and the step timed is the trainer's `grok.train.step` at the task's answer positions, in the
trainer's chunks of runs (forward, float64 loss, backward, PackOptimizer update).

Sequential single runs: R single runs one after another take R times the steps of one, so
their run-steps/s is the steps/s of a pack of one (same code path: a single run is a pack of
one). A pack of R makes R run-steps per step. For each frac and each R > 1 the pack of R and
the pack of one are timed in the same process, interleaved in alternating blocks after
warmup steps (the baseline's blocks last about as long as the pack's), medians of the block
means; the ratio is the pack's run-steps/s over the baseline timed beside it. An eval of the
pack (train accuracy from the step's train logits, test forward in the trainer's chunks, test
loss and accuracy, one transfer per column, as grok.train.forward_backward and
grok.train.evaluate compute them for the whole pack; not the per-run progress measures) is
timed too and shown as a share of `eval_every` steps.

Then a projection of the wall time of `experiment=furuta_table` (jobs read from
conf/experiment/furuta_table.yaml) on this device, in one process: the steps a job needs are
unknown before it runs, so the model is: a share --grok-share of the jobs early-stops after
--early-steps steps, the rest run the full budget (or every job runs --steps-per-job steps).
Seconds per run-step (train step + eval share) are interpolated linearly in frac between the
measured fracs. For packs two figures: stopped runs cost nothing (ideal compaction), and every
run of a pack costs the full budget (no compaction; the trainer compacts once half a pack stops).

--check: in float64 on the CPU, a pack of 3 runs (different ops, seeds and fracs, so padding
is exercised) against each run alone: logits, losses, gradients, and the weights after one step.

This is a benchmark, not a test: it prints numbers and never fails on them.
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from grok.checks import check as check_run_config  # noqa: E402
from grok.data import PackBatch, make_data  # noqa: E402
from grok.hardware import DTYPES, torch_dtype  # noqa: E402
from grok.losses import loss_fn  # noqa: E402
from grok.models import build_model  # noqa: E402
from grok.train import chunk_size, make_optimizer, run_losses, scores, step  # noqa: E402

OPS = "x+y,x-y,x*y,x2+y2"
TABLE = REPO / "conf" / "experiment" / "furuta_table.yaml"
# per device: sizes, warmup steps, pack steps per block, measured pack steps, budget s, eval reps
DEFAULTS = {
    "cpu": dict(sizes="1,8,32", warmup=1, block=1, steps=6, budget=20.0, eval_reps=2),
    "cuda": dict(sizes="1,8,32,128,256,512", warmup=10, block=20, steps=200, budget=20.0, eval_reps=5),
}


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def run_cfgs(base, ops, frac, n):
    """Configs of runs 0..n-1 at `frac`: op cycles through `ops`, seed = r // len(ops)."""
    out = []
    for r in range(n):
        c = base.copy()
        c.op, c.seed, c.frac = ops[r % len(ops)], r // len(ops), float(frac)
        out.append(c)
    return out


def init_model(cfg, task=None):
    """A run's model as grok.runs.Run.init_model makes it (no checkpoint)."""
    task = task or check_run_config(cfg)
    torch.manual_seed(cfg.seed)
    return build_model(cfg, task)


class Bench:
    """A pack as the trainer holds it: stacked model, pack optimizer, padded train/test examples."""

    def __init__(self, cfgs, device, dtype):
        tasks = [check_run_config(c) for c in cfgs]
        datas = [make_data(t, c) for t, c in zip(tasks, cfgs)]
        self.R = len(cfgs)
        self.at = tasks[0].positions
        models = [init_model(c, t) for c, t in zip(cfgs, tasks)]
        self.model = type(models[0]).stack(models).to(device, dtype)
        self.opt = make_optimizer(cfgs, dict(self.model.named_parameters()))
        self.train = PackBatch.pad([d.train for d in datas]).to(device)
        self.test = PackBatch.pad([d.test for d in datas]).to(device)
        self.n_train = int(self.train.n.max())
        # as the trainer chooses: padded train examples times answer positions
        self.chunk = chunk_size(cfgs[0], self.train.targets.shape[1] * len(self.at))

    def step(self):
        step(self.model, self.opt, self.train, at=self.at, chunk=self.chunk)

    def logits(self, tokens):
        """Logits (R, N, K, C) of the whole pack, in the trainer's chunks of runs."""
        parts = (slice(a, a + self.chunk) for a in range(0, self.R, self.chunk))
        return torch.cat([self.model.logits_at(tokens[part], self.at, runs=part) for part in parts])

    @torch.no_grad()
    def eval(self, train_logits):
        """What an eval step adds for the whole pack before the per-run records: the train
        scores grok.train.forward_backward takes from the step's logits, and what
        grok.train.evaluate computes (test forward in chunks, test loss and scores, transfers)."""
        many = len(self.at) > 1
        # (the token losses come with the step's loss in the trainer; here, from its logits)
        targets = self.train.targets
        train = scores(train_logits, targets, run_losses(train_logits, targets)[1], many)
        parts = []
        for a in range(0, self.R, self.chunk):
            part = slice(a, a + self.chunk)
            logits = self.model.logits_at(self.test.tokens[part], self.at, runs=part)
            targets = self.test.targets[part]
            loss, ce = run_losses(logits, targets)
            parts.append({"loss": loss, **scores(logits, targets, ce, many)})
        test = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        cols = [train["acc"], test["loss"], test["acc"]]
        if many:
            cols += [train["pos_loss"], test["pos_loss"], test["pos_acc"]]
        for c in cols:  # one transfer per column, as grok.train.evaluate
            c.tolist()
        self.opt.lr_now().tolist()


def make_sync(device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def block_time(fn, n, sync):
    """Mean seconds per call over n calls, synchronised at both ends."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def measure_pair(pack, base, args, sync):
    """Interleaved block means (s/step) of `pack` and of the pack of one `base`."""
    for _ in range(max(0, args.warmup - 1)):
        pack.step()
        base.step()
    # the last warmup step of each is timed, to size the blocks
    t_pack, t_base = block_time(pack.step, 1, sync), block_time(base.step, 1, sync)
    # the baseline's blocks last about as long as the pack's, so both see the same machine
    base_block = max(1, min(1000, round(args.block * t_pack / max(t_base, 1e-9))))
    times = {"pack": [], "base": []}
    blocks = {"pack": (pack.step, args.block), "base": (base.step, base_block)}
    rounds, t_start = 0, time.perf_counter()
    while len(times["pack"]) * args.block < args.steps:
        if rounds >= 2 and time.perf_counter() - t_start > args.budget:
            break
        order = ("pack", "base") if rounds % 2 == 0 else ("base", "pack")
        for k in order:
            fn, n = blocks[k]
            times[k].append(block_time(fn, n, sync))
        rounds += 1
    return times, base_block


def time_eval(b, args, sync):
    with torch.no_grad():
        logits = b.logits(b.train.tokens)
    if not args.device.startswith("cpu"):
        b.eval(logits)  # warmup (on the CPU the forward above is one)
    return statistics.median(block_time(lambda: b.eval(logits), 1, sync) for _ in range(args.eval_reps))


def is_oom(e: RuntimeError) -> bool:
    """Out of device memory: the allocator's error, or cuBLAS failing to allocate its workspace."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or any(
        s in str(e) for s in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED"))


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- check --------------------------------------------------------------------------------------

def check(base_cfg):
    """Max abs differences, float64 CPU, between a pack of 3 and each of its runs alone."""
    cfgs = []
    for op, seed, frac in (("x+y", 0, 0.3), ("x*y", 1, 0.5), ("x2+y2", 2, 0.3)):
        c = base_cfg.copy()
        c.op, c.seed, c.frac = op, seed, frac
        c.train.device, c.train.dtype = "cpu", "float64"
        cfgs.append(c)
    dt, cpu = torch.float64, torch.device("cpu")
    pack = Bench(cfgs, cpu, dt)
    logits = pack.model.logits_at(pack.train.tokens, pack.at)      # the whole pack in one forward
    losses = run_losses(logits, pack.train.targets)[0]
    losses.sum().backward()
    packed = dict(pack.model.named_parameters())
    d_logit = d_loss = d_grad = d_step = 0.0
    for r, c in enumerate(cfgs):
        n = int(pack.train.n[r])
        x, y = pack.train.tokens[r, :n], pack.train.targets[r, :n]
        single = init_model(c).to(dt)  # a plain single model (no run axis)
        out = single.logits_at(x, pack.at)                           # (N, K, C)
        loss = loss_fn(out.flatten(0, 1), y.flatten())
        loss.backward()
        d_logit = max(d_logit, (out - logits[r, :n]).abs().max().item())
        d_loss = max(d_loss, abs(loss.item() - losses[r].item()))
        for name, w in single.named_parameters():
            d_grad = max(d_grad, (w.grad - packed[name].grad[r]).abs().max().item())
    pack.opt.step()
    for r, c in enumerate(cfgs):  # each run alone, as grok.train.run trains it: a pack of one
        one = Bench([c], cpu, dt)
        one.step()
        for name, w in one.model.named_parameters():
            d_step = max(d_step, (w[0] - packed[name][r]).abs().max().item())
    ns = pack.train.n.tolist()
    print(f"check float64 cpu, pack of 3 (x+y s0 f0.3, x*y s1 f0.5, x2+y2 s2 f0.3; {ns} train "
          f"pairs, padded to {pack.n_train}) vs each run alone: max |d logits| {d_logit:.2e}, "
          f"|d loss| {d_loss:.2e}, |d grad| {d_grad:.2e}, |d weights after 1 step| {d_step:.2e}")


# -- projection ---------------------------------------------------------------------------------

def table_jobs():
    """ops, fracs, seeds of the furuta_table sweep and its train settings."""
    params = OmegaConf.load(TABLE).hydra.sweeper.params

    def items(v):
        return [s.strip().strip("'\"") for s in str(v).split(",") if s.strip()]

    ops, fracs, seeds = items(params.op), [float(f) for f in items(params.frac)], items(params.seed)
    t = compose(["experiment=furuta_table", "logger=none"]).train
    return ops, fracs, seeds, t


def interp(xs, ys, x):
    """Piecewise linear through (xs, ys) (sorted xs), extended linearly past the ends."""
    if len(xs) == 1:
        return ys[0]
    i = max(1, min(len(xs) - 1, next((k for k, v in enumerate(xs) if v >= x), len(xs) - 1)))
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def project(results, args):
    ops, fracs, seeds, t = table_jobs()
    budget, eval_every = t.steps, t.eval_every
    n_jobs = len(ops) * len(fracs) * len(seeds)
    per_frac = len(ops) * len(seeds)
    if args.steps_per_job is not None:
        spj = float(args.steps_per_job)
        how = f"every job runs {args.steps_per_job} steps (--steps-per-job)"
    else:
        g = args.grok_share
        spj = g * args.early_steps + (1 - g) * budget
        how = (f"{g:.0%} of the jobs early-stop at {args.early_steps} steps (--grok-share, "
               f"--early-steps; the stop comes {t.early_stop_after} steps after the verdict settles), "
               f"the rest run the full {budget}")
    run_steps = n_jobs * spj
    measured = sorted(results)
    print("\nprojection of experiment=furuta_table on this device, one process:")
    print(f"  {n_jobs} jobs = {len(ops)} ops x {len(fracs)} fracs ({fracs[0]}..{fracs[-1]}) x "
          f"{len(seeds)} seeds; budget {budget} steps, eval every {eval_every} steps")
    print(f"  steps per job (an assumption): {how} -> {spj:,.0f} per job, {run_steps:,.0f} run-steps")
    print(f"  s per run-step at each table frac: (train step + eval / {eval_every}) / R, linear in "
          f"frac through the measured fracs {', '.join(map(str, measured))}"
          + (" (one frac: taken as constant)" if len(measured) == 1 else "")
          + ("; extrapolated past them" if len(measured) > 1 and (fracs[0] < measured[0]
                                                                 or fracs[-1] > measured[-1]) else ""))
    print("  not counted: progress measures (measures=default), checkpoints, logging, job start-up;"
          " pack compaction and runs of a pack stopping at different steps (see the two columns)")
    sizes = sorted({R for f in measured for R in results[f]
                    if all(R in results[g] for g in measured)})
    if not sizes:
        print("  no pack size was measured at every frac: no projection")
        return

    def sec_per_run_step(R, f):
        return interp(measured, [results[g][R]["s_run_step"] for g in measured], f)

    hours = {}
    print(f"  {'R':>5}{'hours':>12}{'hours, all full budget':>25}{'vs sequential':>15}")
    for R in sizes:
        s = sum(per_frac * sec_per_run_step(R, f) for f in fracs)  # s for one step of every job
        hours[R] = h = s * spj / 3600
        if R == 1:
            print(f"  {R:>5}{h:>12,.1f}  (sequential single runs)")
        else:
            ratio = f"{hours[1] / h:>14.2f}x" if 1 in hours else ""
            print(f"  {R:>5}{h:>12,.1f}{s * budget / 3600:>25,.1f}{ratio:>15}")
    best = min(hours, key=hours.get)
    if 1 in hours:
        print(f"  best: packs of {best}: {hours[best]:,.1f} h ({hours[best] / 24:,.1f} days) against "
              f"{hours[1]:,.1f} h ({hours[1] / 24:,.1f} days) for sequential single runs")


# -- main ---------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default off)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="runs per forward/backward (default: the trainer's train.chunk=null choice)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--sizes", default=None,
                    help="pack sizes, comma-separated (cpu default 1,8,32; cuda 1,8,32,128,256,512; "
                         "on CUDA growth stops at the first size out of memory)")
    ap.add_argument("--fracs", default="0.3,0.9", help="train fractions, one pack per size and frac")
    ap.add_argument("--ops", default=OPS, help="ops cycled through a pack's runs (seeds count up)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="unmeasured steps per pack first (the last one sizes the blocks)")
    ap.add_argument("--block", type=int, default=None, help="pack steps per timed block")
    ap.add_argument("--steps", type=int, default=None, help="measured pack steps per size and frac")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per measurement (pack R and its baseline); stops after 2 rounds past it")
    ap.add_argument("--eval-reps", type=int, default=None, help="timed evals per size and frac")
    ap.add_argument("--check", action="store_true",
                    help="first check, in float64 on the CPU, a pack of 3 against its runs alone")
    ap.add_argument("--grok-share", type=float, default=0.5,
                    help="projection: share of the table's jobs that early-stop (default 0.5)")
    ap.add_argument("--early-steps", type=int, default=30000,
                    help="projection: steps of a job that early-stops (default 30000)")
    ap.add_argument("--steps-per-job", type=int, default=None,
                    help="projection: every job runs this many steps (overrides the two above)")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available here")
    for k, v in DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    fracs = [float(f) for f in args.fracs.split(",")]
    ops = [o.strip() for o in args.ops.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    dtype = torch_dtype(args.dtype)
    sync = make_sync(device)

    base_cfg = compose(["experiment=furuta", "logger=none", "task=poly", f"op={ops[0]}",
                        f"train.device={args.device}", f"train.dtype={args.dtype}",
                        f"train.chunk={args.chunk or 'null'}"])
    m, o = base_cfg.model, base_cfg.optimizer
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"device {device_name(device)} ({args.device}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads on {os.cpu_count()} cpus{load}, {args.dtype}"
          + (f", tf32 {'on' if args.tf32 else 'off'}" if device.type == "cuda" else ""))
    print(f"p={base_cfg.p}, {m.name} model (layout {m.layout}, d_model {m.d_model}, {m.n_heads} heads x "
          f"{m.d_head}, d_mlp {m.d_mlp}, pos_embed {m.pos_embed}, mlp_bias {m.mlp_bias}, impl {m.impl}); "
          f"{o.name} lr {o.lr} betas {tuple(o.betas)} wd {o.weight_decay}; runs cycle ops "
          f"{', '.join(ops)} with seeds 0, 1, ...")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus before the start: other "
              "processes share this machine and the figures below are noisy")
    print(f"timing: {args.warmup} warmup, blocks of {args.block} pack steps, up to {args.steps} pack steps "
          f"or {args.budget:.0f} s per size (baseline blocks of equal time), medians of block means")

    torch.set_flush_denormal(True)  # as grok.train does
    try:
        if args.check:
            check(base_cfg)
        results = bench(args, base_cfg, ops, sizes, fracs, device, dtype, sync)
        project(results, args)
        if hasattr(os, "getloadavg"):
            print(f"load avg at the end {os.getloadavg()[0]:.2f}")
    finally:
        torch.set_flush_denormal(False)  # torch's default, as grok.train leaves it


def bench(args, base_cfg, ops, sizes, fracs, device, dtype, sync):
    cuda = device.type == "cuda"
    eval_every = base_cfg.train.eval_every
    mem_col = f"{'peak GiB':>9}" if cuda else ""
    print(f"\n{'frac':>5}{'R':>6}{'train':>7}{'ms/step':>10}{'run-steps/s':>13}{'seq ms/step':>13}"
          f"{'ratio':>8}{'eval ms':>9}{'eval/' + str(eval_every):>9}{'blocks':>8}{mem_col}")
    results = {}
    for frac in fracs:
        cfgs = run_cfgs(base_cfg, ops, frac, max(sizes))
        results[frac] = {}
        base = Bench(cfgs[:1], device, dtype)
        base_eval = time_eval(base, args, sync)
        base_times = []
        for R in sizes:
            if R == 1:
                continue
            pack, oom = None, False
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                pack = Bench(cfgs[:R], device, dtype)
                times, _ = measure_pair(pack, base, args, sync)
                ev = time_eval(pack, args, sync)
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
                if not (cuda and is_oom(e)):
                    raise
                oom = True
            finally:
                del pack
            free(device)
            if oom:
                print(f"{frac:>5}{R:>6}  OOM (out of device memory): larger sizes skipped at this frac")
                break
            t_p, t_b = statistics.median(times["pack"]), statistics.median(times["base"])
            base_times += times["base"]
            results[frac][R] = dict(t_step=t_p, t_eval=ev, s_run_step=(t_p + ev / eval_every) / R)
            print(f"{frac:>5}{R:>6}{base.n_train:>7}{t_p * 1e3:>10.2f}{R / t_p:>13.1f}{t_b * 1e3:>13.2f}"
                  f"{R * t_b / t_p:>7.2f}x{ev * 1e3:>9.1f}{ev / (eval_every * t_p):>9.2%}"
                  f"{len(times['pack']):>8}" + (f"{peak:>9.2f}" if cuda else ""))
        if 1 in sizes:
            if not base_times:  # no pack to pair with: time the baseline alone
                for _ in range(args.warmup):
                    base.step()
                base_times = [block_time(base.step, args.block, sync)
                              for _ in range(max(1, args.steps // args.block))]
            t_b = statistics.median(base_times)
            results[frac][1] = dict(t_step=t_b, t_eval=base_eval,
                                    s_run_step=t_b + base_eval / eval_every)
            print(f"{frac:>5}{1:>6}{base.n_train:>7}{t_b * 1e3:>10.2f}{1 / t_b:>13.1f}{'':>13}{'':>8}"
                  f"{base_eval * 1e3:>9.1f}{base_eval / (eval_every * t_b):>9.2%}{len(base_times):>8}"
                  f"  <- sequential single runs (all baseline blocks of this frac)")
        del base
        free(device)
    return results


if __name__ == "__main__":
    main()
