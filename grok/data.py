"""A run's examples: the seeded train/test split of a task's data (or, for infinite data, the
batch of each step), the modular tasks' universe of p*p pairs and token layouts, and the padded
batches of a pack."""

from dataclasses import dataclass

import numpy as np
import torch

from grok.layouts import FURUTA_OP_TOKENS, LAYOUTS
from grok.ops import Op
from grok.sampling import distinct, rng_for


def tokens_for(op: Op, layout: str, p: int, x: torch.Tensor, y: torch.Tensor,
               op_token: int | None = None) -> torch.Tensor:
    """Sequences for pairs (x, y): nanda [x, y, =]; furuta [x, op, y]. `op_token` (a mixture:
    each op its own token, see grok.tasks.mixture) replaces `=` in nanda and the op token in
    furuta."""
    if layout == "nanda":
        return torch.stack([x, y, torch.full_like(x, p if op_token is None else op_token)], dim=1)
    if layout == "furuta":
        if op_token is None:
            op_token = p + FURUTA_OP_TOKENS.get(op.canonical, 0)
        return torch.stack([x, torch.full_like(x, op_token), y], dim=1)
    raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")


def full_grid(op: Op, p: int, layout: str, train_idx: torch.Tensor, op_token: int | None = None):
    """Every (x, y) in x-major order, for measures that need the model on the whole input grid
    (even pairs an op has no answer for, e.g. y = 0 in division): tokens, labels (-1 where
    undefined), and which pairs are in the training set (`train_idx`: indices into the pairs
    with an answer, x-major, as the modular task's universe lists them)."""
    px, py, pz = (torch.from_numpy(a).long() for a in op.labels(p))
    pairs = px * p + py
    x = torch.arange(p).repeat_interleave(p)
    y = torch.arange(p).repeat(p)
    labels = torch.full((p * p,), -1, dtype=torch.long)
    labels[pairs] = pz
    train_mask = torch.zeros(p * p, dtype=torch.bool)
    train_mask[pairs[train_idx]] = True
    return tokens_for(op, layout, p, x, y, op_token), labels, train_mask


@dataclass
class Data:
    """A run's examples as tensors: tokens (N, n_ctx) and targets (N, K) at the task's K answer
    positions (-1: no loss). `train` is None for infinite data (see `batch_at`)."""
    train: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor]
    seed: int
    frac: float | None = None               # finite universes: the split
    train_idx: torch.Tensor | None = None   # finite universes: indices of the train examples

    @property
    def n_train(self) -> int | None:
        return None if self.train is None else len(self.train[1])


def _tensors(task, tokens, targets):
    return (torch.from_numpy(np.ascontiguousarray(tokens)).long(),
            torch.from_numpy(np.ascontiguousarray(targets[:, list(task.positions)])).long())


def make_data(task, cfg) -> Data:
    """The split of a finite universe by `frac` (a shuffle that depends only on the seed, the
    same split modular runs have always had), or `task.n_train` and `task.n_test` distinct
    examples drawn with the seed (n_train null: infinite data)."""
    seed = cfg.seed
    if task.finite:
        tokens, targets = _tensors(task, *task.universe())
        tr, te = task.split(len(tokens), cfg.frac, seed)
        return Data((tokens[tr], targets[tr]), (tokens[te], targets[te]), seed, cfg.frac, tr)
    n_train, n_test = cfg.task.get("n_train"), cfg.task.n_test
    if n_train is None:
        return Data(None, _tensors(task, *task.sample(n_test, rng_for(seed, 1))), seed)
    train = distinct(task, n_train, rng_for(seed, 0))
    test = distinct(task, n_test, rng_for(seed, 1), exclude={row.tobytes() for row in train[0]})
    return Data(_tensors(task, *train), _tensors(task, *test), seed)


def batch_at(task, cfg, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Infinite data: the fresh batch of `step`, a function of (seed, step) only, so a resumed
    run draws exactly the batches it would have drawn."""
    return _tensors(task, *task.sample(cfg.task.batch, rng_for(cfg.seed, 2, step)))


@dataclass
class PackBatch:
    """Examples of R runs padded to one length: tokens (R, N, T), targets (R, N, K) with -1 where a
    position is padding or carries no loss, and each run's example count n (R,), kept on the CPU
    (read every step, never on the device). Padding repeats a run's first example, so the model
    sees only valid tokens; its targets of -1 exclude it."""
    tokens: torch.Tensor
    targets: torch.Tensor
    n: torch.Tensor

    @classmethod
    def pad(cls, sets: list[tuple[torch.Tensor, torch.Tensor]], length: int = 0) -> "PackBatch":
        """Pad to the longest set, or to `length` if that is longer (a resumed pack pads as
        the pack it resumes did, so its runs round exactly as before)."""
        N = max(length, *(len(y) for _, y in sets))
        tokens, targets = [], []
        for x, y in sets:
            fill = N - len(y)
            tokens.append(torch.cat([x, x[:1].expand(fill, -1)]))
            targets.append(torch.cat([y, y.new_full((fill, *y.shape[1:]), -1)]))
        return cls(torch.stack(tokens), torch.stack(targets),
                   torch.tensor([len(y) for _, y in sets], dtype=torch.long))

    def to(self, device) -> "PackBatch":
        return PackBatch(self.tokens.to(device), self.targets.to(device), self.n)

    def select(self, keep: torch.Tensor) -> "PackBatch":
        """The runs at `keep`, padded length unchanged (so each run's arithmetic is unchanged)."""
        keep = keep.to(self.tokens.device)
        return PackBatch(*(t.index_select(0, keep.to(t.device)) for t in (self.tokens, self.targets)),
                         self.n.index_select(0, keep.cpu()))
