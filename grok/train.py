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
import threading

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from grok.data import PackBatch, batch_at
from grok.hardware import DTYPE_BYTES, is_gpu, torch_dtype
from grok.losses import accuracy, mean_ce, own_sums, per_position, token_ce, token_loss
from grok.optim import PackOptimizer, update_rule
from grok.progress import FAILED, TRAINING, bar_logging, bar_wanted, pack_line
from grok.record.local import one_line
from grok.record.lock import FolderError
from grok.runs import Run
from grok.tasks import build_task

log = logging.getLogger(__name__)


def shape_key(cfg: DictConfig, task=None) -> tuple:
    """What runs of one pack must share: the task's shapes and kind of data (a finite set or a
    fresh batch per step), the model, the optimizer kind, device and dtype. `task`: cfg's task,
    if built already."""
    t, task = cfg.train, build_task(cfg) if task is None else task
    model = tuple((k, v) for k, v in OmegaConf.to_container(cfg.model).items() if k != "name")
    infinite = not task.finite and cfg.task.get("n_train") is None
    data = ("infinite", cfg.task.batch) if infinite else ("finite",)
    frozen = tuple(sorted(map(str, cfg.init.freeze or ()))) if "init" in cfg else ()  # no gradient
    return (type(task).__name__, task.shape(), data, model, optimizer_key(cfg.optimizer),
            loss_name(cfg), t.device, t.dtype, *((("frozen", frozen),) if frozen else ()))


def optimizer_key(o) -> tuple:
    """What the runs of a pack share of their optimizer: the update rule and the gradient
    transforms (their per-run coefficients may differ; the MA window may not)."""
    gf = o.get("grokfast") or {}
    return (update_rule(o), gf.get("filter"), gf.get("window"), o.get("orthogonal", False))


def loss_name(cfg: DictConfig) -> str:
    return cfg.loss.name if cfg.get("loss") else "cross_entropy"


def make_loss(cfg: DictConfig):
    """The token loss of the `loss` group (conf/loss/), softmax cross-entropy if none is chosen;
    looked up among grok.losses' registered losses, never imported (grok.losses.token_loss)."""
    return token_loss(cfg)


def pack_key(cfg: DictConfig, task=None) -> tuple:
    """How a sweep groups its jobs into packs: the shape key, and (so that no run idles in a
    pack) the step budget and eval interval, and the thread count. `task`: cfg's task, if built."""
    t = cfg.train
    return (*shape_key(cfg, task), t.steps, t.eval_every, t.threads)


def make_optimizer(cfgs: list[DictConfig], params: dict) -> PackOptimizer:
    """The pack optimizer of the update rule the runs' `optimizer._target_` names, with each
    run's own hyperparameters (those the rule declares)."""
    o = [c.optimizer for c in cfgs]
    rule = update_rule(o[0])
    gf = [c.get("grokfast") for c in o]
    grokfast = gf[0] and {"filter": gf[0].filter, "window": gf[0].get("window"),
                          "lamb": [g.lamb for g in gf], "alpha": [g.get("alpha") for g in gf]}
    hyper = {k: [OmegaConf.to_object(c[k]) if OmegaConf.is_config(c[k]) else c[k] for c in o]
             for k in rule.HYPER}
    return PackOptimizer(params, rule, grokfast=grokfast or None,
                         orthogonal=o[0].get("orthogonal", False), **hyper)


class Pack:
    """The trained state of the runs `runs`: run i is index i of every stacked tensor."""

    def __init__(self, runs: list[Run], device, dtype):
        self.runs, self.members, self.device = list(runs), list(runs), device
        self.positions = runs[0].task.positions
        models = [r.init_model() for r in runs]
        self.model = type(models[0]).stack(models).to(device, dtype)
        self.frozen = set(runs[0].frozen())  # the same in every run of a pack (its shape key)
        self.opt = make_optimizer([r.cfg for r in runs], self.trainable())
        self.loss = make_loss(runs[0].cfg)
        for i, r in enumerate(runs):
            if r.ck:
                self.opt.load_run_state(i, r.ck["optimizer"])
        # A resumed run pads as its pack did before (its checkpoint says how far): padding
        # changes no value, but the length of a sum changes its float rounding.
        pads = [r.ck.get("padded", (0, 0)) if r.ck else (0, 0) for r in runs]
        self.infinite = runs[0].data.train is None
        self.pad_train = max(p[0] for p in pads)
        self.train = None if self.infinite else PackBatch.pad([r.data.train for r in runs],
                                                             self.pad_train).to(device)
        self.test = PackBatch.pad([r.data.test for r in runs], max(p[1] for p in pads)).to(device)

    def batch(self) -> PackBatch:
        """This step's training examples: the fixed train sets, or (infinite data) each run's
        fresh batch for its own step (stopped runs too, until compaction drops them)."""
        if not self.infinite:
            return self.train
        sets = [batch_at(r.task, r.cfg, r.step) for r in self.members]
        return PackBatch.pad(sets, self.pad_train).to(self.device)

    def compact(self, keep: list[int]) -> None:
        """Slice out every run not in `keep`: finished runs then cost nothing."""
        idx = torch.tensor(keep, device=self.test.tokens.device)
        self.runs = [self.runs[i] for i in keep]
        self.members = [self.members[i] for i in keep]
        self.model = self.model.select(idx)
        self.opt = self.opt.select(idx, self.trainable())
        self.test = self.test.select(idx)
        if not self.infinite:
            self.train = self.train.select(idx)

    def trainable(self) -> dict:
        """The parameters the optimizer updates; frozen ones (init.freeze) get no gradient and no
        weight decay, so they end bit-identical to how they started."""
        params = dict(self.model.named_parameters())
        for name in self.frozen:
            params.pop(name).requires_grad_(False)
        return params

    def save(self, i: int, done: bool = False) -> None:
        self.runs[i].save(self.model.run(i), self.opt.run_state(i), self.padded(), done=done)

    def advance(self, i: int) -> None:
        """Run i has taken its step: its snapshot and checkpoint, if due now."""
        r = self.runs[i]
        r.step += 1
        self.snapshot(i)
        if r.step % r.cfg.train.checkpoint_every == 0:
            self.save(i)

    def guard(self, i: int, work):
        """`work()` for run i, one run's own records; if it raises, that run fails alone: it is
        logged to its launch.log, its `finished` is the error and its slot idles (compaction drops
        it), so one run's folder never fails the others. What `work` returned, else None."""
        r = self.runs[i]
        try:
            return work()
        except Exception as e:  # noqa: BLE001 - this run's own fault fails this run only
            log.error("%s: failed: %s", r.dir, one_line(e), exc_info=e, extra={"run": str(r.dir)})
            r.finished = e
            self.runs[i] = None
            return None

    def snapshot(self, i: int) -> None:
        if self.runs[i].snapshot_due():
            self.runs[i].snapshot(self.model.run(i))

    def padded(self) -> tuple[int, int]:
        train = self.members[0].cfg.task.batch if self.infinite else self.train.targets.shape[1]
        return train, self.test.targets.shape[1]


def chunk_size(cfg: DictConfig, n: int) -> int:
    """Runs per forward/backward (`train.chunk`; null: the whole pack on a GPU, and on a CPU as
    many runs as keep their MLP activations, n examples each, under CPU_CHUNK_BYTES)."""
    if cfg.train.chunk:
        return cfg.train.chunk
    if is_gpu(cfg.train.device):
        return MAX_CHUNK
    width = DTYPE_BYTES[cfg.train.dtype]
    return max(1, int(CPU_CHUNK_BYTES // (n * cfg.model.d_mlp * width)))


# On a CPU a step is compute- and cache-bound: measured on a 2-core EPYC at p=97 (d_mlp 512), 2
# runs in one forward at frac 0.3 ran 1.00-1.06x the run-steps/s of single runs, 8 runs (0.3) or
# 2 (0.9) ran 0.58-0.79x. So a CPU pack runs its forward and backward in cache-sized chunks.
CPU_CHUNK_BYTES = 12e6
MAX_CHUNK = 1 << 20


def run_losses(logits: torch.Tensor, targets: torch.Tensor, loss=token_ce,
               counts: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each run's mean loss over its answer tokens (R,), and the token losses (R, N, K) it is
    the mean of (logits (R, N, K, C)); `loss`: the token loss (grok.losses). `counts`: each run's
    own example count, if the pack padded them: each run's sum then covers its own examples only,
    so its loss is the one it records alone, bit for bit (grok.losses.own_sums)."""
    ce = loss(logits, targets)
    labelled = targets.flatten(-2)
    if counts is None:
        return mean_ce(ce.flatten(-2), labelled), ce
    K = targets.shape[-1]
    return own_sums(ce.flatten(-2), [n * K for n in counts]) / (labelled >= 0).sum(-1), ce


def scores(logits: torch.Tensor, targets: torch.Tensor, ce: torch.Tensor, positions: bool,
           counts: list[int] | None = None) -> dict:
    """Each run's sequence accuracy (R,) and, with `positions`, per-position loss and accuracy
    (R, K), from logits (R, N, K, C) and token losses `ce` already computed; `counts` as in
    `run_losses`."""
    out = {"acc": accuracy(logits, targets)}
    if positions:
        out["pos_loss"], out["pos_acc"] = per_position(logits, targets, ce, counts)
    return out


def forward_backward(model, batch: PackBatch, chunk: int, at, accuracies: bool = False, loss=token_ce):
    """Gradients of every run's mean loss over its answer tokens (positions `at`), `chunk` runs
    at a time (each run's arithmetic is the same in any chunk); each run's loss (R,) and, if
    asked, its train scores (see `scores`)."""
    R = batch.tokens.shape[0]
    losses, parts = [], []
    for a in range(0, R, chunk):
        part = None if chunk >= R else slice(a, a + chunk)
        sub = batch if part is None else PackBatch(batch.tokens[part], batch.targets[part], batch.n[part])
        logits = model.logits_at(sub.tokens, at, runs=part)                # (R, N, K, C)
        counts = sub.n.tolist()  # on the CPU: no device sync
        run_loss, ce = run_losses(logits, sub.targets, loss, counts)
        run_loss.sum().backward()  # a sum of the runs' losses: each run gets exactly its own gradient
        losses.append(run_loss.detach())
        if accuracies:
            with torch.no_grad():
                parts.append(scores(logits.detach(), sub.targets, ce.detach(), len(at) > 1, counts))
    train = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else None
    return torch.cat(losses), train


def step(model, opt: PackOptimizer, batch: PackBatch, at=(2,), chunk: int = MAX_CHUNK) -> torch.Tensor:
    """One full-batch update of every run of the pack; each run's loss before it."""
    opt.zero_grad()
    losses, _ = forward_backward(model, batch, chunk, at)
    opt.step()
    return losses


@contextlib.contextmanager
def deferred_signals(signals=(signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)):
    """Hold preemption and stop signals (SLURM sends USR2 before a time limit or preemption, and
    submitit's handler then requeues the job and exits; TERM from a launcher or `kill`; INT from
    Ctrl-C or a launcher) until the loop is between steps, so the runs can checkpoint their exact
    state first and no write is cut in half. Yields the list of held signals; `release` hands
    them on to the handlers they had (so the process then ends as that signal says)."""
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


def train_pack(cfgs: list[DictConfig], run_dirs: list, files: list | None = None,
               tasks: list | None = None) -> list:
    """Train the runs `cfgs` (one folder each) as one pack; their summaries, in order. A run that
    cannot start (its folder refuses it or is in use, its checkpoint is unreadable, ...) or whose
    own records fail while it trains (a file it cannot write) fails alone: its entry is the
    exception, and the others train. An error of the pack's own arithmetic raises.
    `files`: per run, further files to write into its folder once it trains (Hydra's `.hydra/`).
    `tasks`: per run, its task if the caller built it already (the launchers' batch check)."""
    # Denormal floats in tiny late-training gradients cost ~5x. The setting is process-wide, so
    # it is undone afterwards (torch's default is off; a sweep's next job sets it again).
    torch.set_flush_denormal(True)
    try:
        return _train_pack(cfgs, run_dirs, files or [None] * len(cfgs), tasks)
    finally:
        torch.set_flush_denormal(False)


def _train_pack(cfgs, run_dirs, files, tasks=None) -> list:
    tasks = tasks or [build_task(c) for c in cfgs]  # each job's one task, handed to its Run
    keys = {shape_key(c, t) for c, t in zip(cfgs, tasks)}
    if len(keys) > 1:
        raise ValueError(f"runs of one pack must share shapes, optimizer, device and dtype: {keys}")
    tc = cfgs[0].train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device, dtype = torch.device(tc.device), torch_dtype(tc.dtype)
    runs, results = [], []
    try:
        for c, d, f, task in zip(cfgs, run_dirs, files, tasks):
            try:
                runs.append(Run(c, d, device, dtype, f, task))
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
    """Train `runs` as one pack until each has stopped. A run whose own records fail (its folder's
    files cannot be written: a path that is a file, a permission, W&B) fails alone: its `finished`
    is the error, it leaves the pack, and the others train on unchanged. An error of the pack's
    own arithmetic raises."""
    pack = Pack(runs, device, dtype)
    with deferred_signals() as (pending, release):  # from the first write: step 0's snapshot too
        for i, r in enumerate(runs):
            pack.guard(i, lambda i=i, r=r: (r.begin(), pack.snapshot(i)))  # step 0 (or the checkpoint's)
        R, cfg = len(runs), runs[0].cfg
        log.info("pack of %d run%s: %s, %s model (%d params each), %s, %s on %s", R,
                 "" if R == 1 else "s", "; ".join(sorted({r.task.describe() for r in runs})),
                 cfg.model.name,
                 sum(w[0].numel() for w in pack.model.parameters()), cfg.optimizer.name,
                 cfg.train.dtype, device)
        chunk = chunk_size(cfg, pack.padded()[0] * len(pack.positions))
        if chunk < R:
            log.info("forward and backward in chunks of %d run(s)", chunk)
        tty = bar_wanted()
        first = min(r.step for r in runs)
        bar = tqdm(total=max(r.budget for r in runs), initial=first, disable=not tty,
                   dynamic_ncols=True, leave=False)
        with bar_logging(tty):  # log lines go through the bar: each whole, no stale bar left
            try:
                _loop(pack, runs, chunk, bar, pending, release)
            finally:
                bar.close()  # leave=False: the bar's row is cleared


def run_state(r: Run) -> str:
    """A run's state for its pack's line: training, failed, or its verdict once finished."""
    if r.finished is None:
        return TRAINING
    if isinstance(r.finished, BaseException):
        return FAILED
    return r.finished.get("verdict", "done")


def _loop(pack: Pack, runs: list[Run], chunk: int, bar, pending: list, release) -> None:
    """`train_runs`' steps until every run has stopped; `bar` counts the pack's steps and,
    for a pack of several runs, shows their states (a log line too when one stops)."""
    many, ended, shown = len(runs) > 1, -1, None
    while any(r is not None for r in pack.runs):
        if many and ended != (ended := sum(r.finished is not None for r in runs)):
            line = pack_line([run_state(r) for r in runs])  # a run stopped or failed last step
            if shown is not None:  # not at the start
                log.info("pack of %s", line)
            bar.set_postfix_str(line, refresh=False)
            shown = line
        if pending:  # preempted: save the exact state, then let the scheduler's handler act
            for i, r in enumerate(pack.runs):
                if r is not None:
                    pack.guard(i, lambda i=i: pack.save(i))
            release()
            pending.clear()
        idle = sum(r is None for r in pack.runs)
        due = [i for i, r in enumerate(pack.runs) if r is not None and r.due()]
        pack.opt.zero_grad()  # gradients first: evaluation reads the same, unchanged weights
        losses, train = forward_backward(pack.model, pack.batch(), chunk, pack.positions,
                                         accuracies=bool(due), loss=pack.loss)
        stopped = evaluate(pack, due, losses, train, chunk) if due else []
        for i in stopped:
            pack.guard(i, lambda i=i: pack.runs[i].finish(pack.model.run(i), pack.opt.run_state(i),
                                                          pack.padded()))
        gone = set(stopped)
        alive = [i for i, r in enumerate(pack.runs) if r is not None and i not in gone]
        if not alive:
            break
        pack.opt.step()
        for i in alive:
            pack.guard(i, lambda i=i: pack.advance(i))
        # Stopped runs took one more (discarded) update above; once they are half of the
        # pack, slice them out. Each remaining run's arithmetic is unchanged by this.
        pack.runs = [None if i in gone else r for i, r in enumerate(pack.runs)]
        alive = [i for i, r in enumerate(pack.runs) if r is not None]
        left = len(pack.runs) - len(alive)
        if alive and left > idle and left * 2 >= len(pack.runs):
            log.info("compacting the pack: %d of %d runs left", len(alive), len(pack.runs))
            pack.compact(alive)
        bar.update(1)
    if many and (line := pack_line([run_state(r) for r in runs])) != shown:
        log.info("pack of %s", line)


@torch.no_grad()
def evaluate(pack: Pack, due: list[int], losses, train: dict, chunk: int) -> list[int]:
    """Log an eval row for each run in `due` (indices into the pack); the ones that stop.
    `losses` (R,) and `train` scores come from this step's training forward. Tasks with several
    answer positions also log each position's loss and accuracy (`test_loss/<position>`, ...)."""
    model, test, at = pack.model, pack.test, pack.positions
    many = len(at) > 1
    parts = []
    for a in range(0, len(pack.runs), chunk):
        part = slice(a, a + chunk)
        logits = model.logits_at(test.tokens[part], at, runs=part)
        targets, counts = test.targets[part], test.n[part].tolist()
        loss, ce = run_losses(logits, targets, pack.loss, counts)
        parts.append({"loss": loss, **scores(logits, targets, ce, many, counts)})
    te = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    cols = {"train_loss": losses, "train_acc": train["acc"], "test_loss": te["loss"], "test_acc": te["acc"]}
    names = pack.members[0].task.position_names
    if many:
        for k, name in enumerate(names):
            cols.update({f"train_loss/{name}": train["pos_loss"][:, k],
                         f"test_loss/{name}": te["pos_loss"][:, k], f"test_acc/{name}": te["pos_acc"][:, k]})
    cols = {k: v.tolist() for k, v in cols.items()}  # one transfer for the whole pack
    lr = pack.opt.lr_now().tolist()
    stopped = []
    for i in due:
        run = pack.runs[i]
        if run is None:
            continue
        row = {"step": run.step, **{k: v[i] for k, v in cols.items()}, "lr": lr[i]}
        if pack.guard(i, lambda run=run, i=i, row=row: run.evaluate(model.run(i), row)):
            stopped.append(i)
    return stopped
