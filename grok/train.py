"""Full-batch training of a pack of runs in one step each: exact, resumable, recorded per run.

A pack is R runs whose tensors have the same shapes (same p, model and optimizer kind); they
differ in values only (op, frac, seed, lr, weight decay, ...). Their weights are stacked on a
leading run axis and trained together; nothing mixes runs, so each run's arithmetic is that of
the same run alone, and a single run is a pack of one (`run`). The pieces:

- `Pack`: the stacked model, the pack optimizer and the padded train/test examples.
- `forward_backward`: every run's float64 mean loss and its gradient, a chunk of runs at a time
  (cache-sized on a CPU); `step` adds the update (what the benchmarks time).
- `grok.runs.Run`: one run's evaluation, stop policy, checkpoint and summary.
- `train_runs`: the loop that ties them together: gradients, evaluate the runs that are due,
  stop the runs that are done, update, checkpoint, and compact the pack once half has stopped.

Every run keeps its own checkpoint, so a pack killed at any point and relaunched ends
bit-identical (on CPU) to one that never stopped.
"""

import contextlib
import logging
import signal
import sys
import threading

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from grok.data import PackBatch
from grok.folders import FolderError
from grok.model import Transformer
from grok.optim import PackOptimizer
from grok.runs import Run, accuracy, loss_fn
from grok.tracking import one_line

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def shape_key(cfg: DictConfig) -> tuple:
    """What runs of one pack must share: tensor shapes, optimizer kind, device and dtype."""
    m, t = cfg.model, cfg.train
    return (cfg.p, m.layout, m.d_model, m.n_heads, m.d_head, m.d_mlp, m.pos_embed, m.mlp_bias,
            m.impl, cfg.optimizer.name, t.device, t.dtype)


def pack_key(cfg: DictConfig) -> tuple:
    """How a sweep groups its jobs into packs: the shape key, and (so that no run idles in a
    pack) the step budget and eval interval, and the thread count."""
    t = cfg.train
    return (*shape_key(cfg), t.steps, t.eval_every, t.threads)


def make_optimizer(cfgs: list[DictConfig], params: dict) -> PackOptimizer:
    """The pack optimizer with each run's own hyperparameters."""
    o = [c.optimizer for c in cfgs]
    kind = o[0].name
    return PackOptimizer(
        params, kind, lr=[c.lr for c in o], weight_decay=[c.weight_decay for c in o],
        warmup_steps=[c.warmup_steps for c in o],
        betas=None if kind == "sgd" else [tuple(c.betas) for c in o],
        momentum=[c.momentum for c in o] if kind == "sgd" else None)


class Pack:
    """The trained state of the runs `runs`: run i is index i of every stacked tensor."""

    def __init__(self, runs: list[Run], device, dtype):
        self.runs = runs
        self.model = Transformer.stack([r.init_model() for r in runs]).to(device, dtype)
        self.opt = make_optimizer([r.cfg for r in runs], dict(self.model.named_parameters()))
        for i, r in enumerate(runs):
            if r.ck:
                self.opt.load_run_state(i, r.ck["optimizer"])
        # A resumed run pads as its pack did before (its checkpoint says how far): padding
        # changes no value, but the length of a sum changes its float rounding.
        pads = [r.ck.get("padded", (0, 0)) if r.ck else (0, 0) for r in runs]
        self.train = PackBatch.pad([r.data.train for r in runs], max(p[0] for p in pads)).to(device)
        self.test = PackBatch.pad([r.data.test for r in runs], max(p[1] for p in pads)).to(device)

    def compact(self, keep: list[int]) -> None:
        """Slice out every run not in `keep`: finished runs then cost nothing."""
        idx = torch.tensor(keep, device=self.train.tokens.device)
        self.runs = [self.runs[i] for i in keep]
        self.model = self.model.select(idx)
        self.opt = self.opt.select(idx, dict(self.model.named_parameters()))
        self.train, self.test = self.train.select(idx), self.test.select(idx)

    def save(self, i: int, done: bool = False) -> None:
        self.runs[i].save(self.model.run(i), self.opt.run_state(i), self.padded(), done=done)

    def padded(self) -> tuple[int, int]:
        return self.train.targets.shape[1], self.test.targets.shape[1]


def chunk_size(cfg: DictConfig, n: int) -> int:
    """Runs per forward/backward (`train.chunk`; null: the whole pack on a GPU, and on a CPU as
    many runs as keep their MLP activations, n examples each, under CPU_CHUNK_BYTES)."""
    if cfg.train.chunk:
        return cfg.train.chunk
    if str(cfg.train.device).startswith("cuda"):
        return MAX_CHUNK
    width = DTYPES[cfg.train.dtype].itemsize
    return max(1, int(CPU_CHUNK_BYTES // (n * cfg.model.d_mlp * width)))


# On a CPU a step is compute- and cache-bound: measured on a 2-core EPYC at p=97 (d_mlp 512), 2
# runs in one forward at frac 0.3 ran 1.00-1.06x the run-steps/s of single runs, 8 runs (0.3) or
# 2 (0.9) ran 0.58-0.79x. So a CPU pack runs its forward and backward in cache-sized chunks.
CPU_CHUNK_BYTES = 12e6
MAX_CHUNK = 1 << 20


def forward_backward(model: Transformer, batch: PackBatch, chunk: int, accuracies: bool = False):
    """Gradients of every run's mean loss, `chunk` runs at a time (each run's arithmetic is the
    same in any chunk); each run's loss (R,) and, if asked, its train accuracy (R,)."""
    R = batch.tokens.shape[0]
    losses, accs = [], []
    for a in range(0, R, chunk):
        part = None if chunk >= R else slice(a, a + chunk)
        sub = batch if part is None else PackBatch(batch.tokens[part], batch.targets[part], batch.n[part])
        logits = model(sub.tokens, runs=part)
        loss = loss_fn(logits, sub.targets)
        loss.sum().backward()  # a sum of the runs' losses: each run gets exactly its own gradient
        losses.append(loss.detach())
        if accuracies:
            accs.append(accuracy(logits.detach(), sub.targets))
    return torch.cat(losses), torch.cat(accs) if accuracies else None


def step(model: Transformer, opt: PackOptimizer, batch: PackBatch, chunk: int = MAX_CHUNK) -> torch.Tensor:
    """One full-batch update of every run of the pack; each run's loss before it."""
    opt.zero_grad()
    losses, _ = forward_backward(model, batch, chunk)
    opt.step()
    return losses


@contextlib.contextmanager
def deferred_signals(signals=(signal.SIGUSR2, signal.SIGTERM)):
    """Hold preemption signals (SLURM sends USR2 before a time limit or preemption; submitit's
    handler then requeues the job and exits) until the loop is between steps, so the runs can
    checkpoint their exact state first. Yields the list of held signals; `release` hands them on."""
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


def run(cfg: DictConfig, run_dir, files: dict[str, str] | None = None) -> dict:
    """Train (or resume, or return the finished result of) the run configured by `cfg` in `run_dir`."""
    [result] = train_pack([cfg], [run_dir], None if files is None else [files])
    if isinstance(result, BaseException):
        raise result
    return result


def train_pack(cfgs: list[DictConfig], run_dirs: list, files: list | None = None) -> list:
    """Train the runs `cfgs` (one folder each) as one pack; their summaries, in order. A run that
    cannot start (its folder refuses it or is in use, its checkpoint is unreadable, ...) fails
    alone: its entry is the exception, and the others train. An error while training raises.
    `files`: per run, further files to write into its folder once it trains (Hydra's `.hydra/`)."""
    # Denormal floats in tiny late-training gradients cost ~5x. The setting is process-wide, so
    # it is undone afterwards (torch's default is off; a sweep's next job sets it again).
    torch.set_flush_denormal(True)
    try:
        return _train_pack(cfgs, run_dirs, files or [None] * len(cfgs))
    finally:
        torch.set_flush_denormal(False)


def _train_pack(cfgs, run_dirs, files) -> list:
    keys = {shape_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ValueError(f"runs of one pack must share shapes, optimizer, device and dtype: {keys}")
    tc = cfgs[0].train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device, dtype = torch.device(tc.device), DTYPES[tc.dtype]
    runs, results = [], []
    try:
        for c, d, f in zip(cfgs, run_dirs, files):
            try:
                runs.append(Run(c, d, device, dtype, f))
                results.append(None)
            except Exception as e:  # noqa: BLE001 - this run fails alone
                if not isinstance(e, FolderError):
                    log.error("%s: cannot start: %s", d, one_line(e), exc_info=e, extra={"run": str(d)})
                results.append(e)
        todo = [r for r in runs if r.finished is None]
        if todo:
            try:
                train_runs(todo, device, dtype)
            except Exception:
                log.exception("pack of %d run(s) failed", len(todo))  # into each run's log
                raise
        done = iter(r.finished for r in runs)
        return [next(done) if r is None else r for r in results]
    finally:
        for r in runs:
            r.close()


def train_runs(runs: list[Run], device, dtype) -> None:
    pack = Pack(runs, device, dtype)
    for r in runs:
        r.begin()
    R, cfg = len(runs), runs[0].cfg
    log.info("pack of %d run(s): %s mod %d, %s model (%d params each), %s, %s on %s", R,
             ", ".join(sorted({r.op.pretty for r in runs})), cfg.p, cfg.model.name,
             sum(w[0].numel() for w in pack.model.parameters()), cfg.optimizer.name, cfg.train.dtype,
             device)
    chunk = chunk_size(cfg, pack.train.targets.shape[1])
    if chunk < R:
        log.info("forward and backward in chunks of %d run(s)", chunk)
    tty = sys.stderr.isatty()
    first = min(r.step for r in runs)
    bar = tqdm(total=max(r.budget for r in runs), initial=first, disable=not tty,
               dynamic_ncols=True, leave=False)
    with deferred_signals() as (pending, release):
        while True:
            if pending:  # preempted: save the exact state, then let the scheduler's handler act
                for i, r in enumerate(pack.runs):
                    if r is not None:
                        pack.save(i)
                release()
                pending.clear()
            due = [i for i, r in enumerate(pack.runs) if r is not None and r.due()]
            pack.opt.zero_grad()  # gradients first: evaluation reads the same, unchanged weights
            losses, train_acc = forward_backward(pack.model, pack.train, chunk, accuracies=bool(due))
            stopped = evaluate(pack, due, losses, train_acc, chunk) if due else []
            for i in stopped:
                pack.runs[i].finish(pack.model.run(i), pack.opt.run_state(i), pack.padded())
            gone = set(stopped)
            alive = [i for i, r in enumerate(pack.runs) if r is not None and i not in gone]
            if not alive:
                break
            pack.opt.step()
            for i in alive:
                r = pack.runs[i]
                r.step += 1
                if r.step % r.cfg.train.checkpoint_every == 0:
                    pack.save(i)
            # Stopped runs took one more (discarded) update above; once they are half of the
            # pack, slice them out. Each remaining run's arithmetic is unchanged by this.
            pack.runs = [None if i in gone else r for i, r in enumerate(pack.runs)]
            if stopped and (len(pack.runs) - len(alive)) * 2 >= len(pack.runs):
                log.info("compacting the pack: %d of %d runs left", len(alive), len(pack.runs))
                pack.compact(alive)
            bar.update(1)
    bar.close()


@torch.no_grad()
def evaluate(pack: Pack, due: list[int], losses, train_acc, chunk: int) -> list[int]:
    """Log an eval row for each run in `due` (indices into the pack); the ones that stop.
    `losses` and `train_acc` (R,) come from this step's training forward."""
    model, test = pack.model, pack.test
    test_loss, test_acc = [], []
    for a in range(0, len(pack.runs), chunk):
        part = slice(a, a + chunk)
        logits = model(test.tokens[part], runs=part)
        test_loss.append(loss_fn(logits, test.targets[part]))
        test_acc.append(accuracy(logits, test.targets[part]))
    cols = {"train_loss": losses, "train_acc": train_acc, "test_loss": torch.cat(test_loss),
            "test_acc": torch.cat(test_acc)}
    cols = {k: v.tolist() for k, v in cols.items()}  # one transfer for the whole pack
    lr = pack.opt.lr_now().tolist()
    stopped = []
    for i in due:
        run = pack.runs[i]
        if run is None:
            continue
        row = {"step": run.step, **{k: v[i] for k, v in cols.items()}, "lr": lr[i]}
        if run.evaluate(model.run(i), row):
            stopped.append(i)
    return stopped
