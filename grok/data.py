"""The universe of p*p pairs, its seeded train/test split, and the token layouts of the papers."""

from dataclasses import dataclass

import torch

from grok.config import LAYOUTS, n_train_for
from grok.ops import Op

# Furuta et al. give each elementary operation its own token so several ops can share one model;
# every other op (polynomials) uses "=". Keyed by the op's canonical form.
FURUTA_OP_TOKENS = {"x+y": 1, "x-y": 2, "xy": 3, "x/y": 4}  # offset from p; "=" is p + 0


def vocab_size(layout: str, p: int) -> int:
    return p + 1 if layout == "nanda" else p + 5


def tokens_for(op: Op, layout: str, p: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sequences for pairs (x, y): nanda [x, y, =]; furuta [x, op, y]."""
    if layout == "nanda":
        return torch.stack([x, y, torch.full_like(x, p)], dim=1)
    if layout == "furuta":
        op_token = p + FURUTA_OP_TOKENS.get(op.canonical, 0)
        return torch.stack([x, torch.full_like(x, op_token), y], dim=1)
    raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")


@dataclass
class Dataset:
    """Train and test tensors plus the full universe (for measures over all p*p inputs)."""
    tokens: torch.Tensor      # (N, 3) every valid pair, x-major order
    labels: torch.Tensor      # (N,)
    pairs: torch.Tensor       # (N,) x * p + y: where each row sits on the full p*p grid
    train_idx: torch.Tensor   # indices into the universe
    test_idx: torch.Tensor

    @property
    def train(self):
        return self.tokens[self.train_idx], self.labels[self.train_idx]

    @property
    def test(self):
        return self.tokens[self.test_idx], self.labels[self.test_idx]


def make_dataset(op: Op, p: int, frac: float, seed: int, layout: str) -> Dataset:
    """All pairs labelled exactly by `op`, split by a shuffle that depends only on `seed`."""
    x, y, z = (torch.from_numpy(a).long() for a in op.labels(p))
    n = len(z)
    n_train = n_train_for(frac, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return Dataset(tokens=tokens_for(op, layout, p, x, y), labels=z, pairs=x * p + y,
                   train_idx=perm[:n_train].sort().values, test_idx=perm[n_train:].sort().values)


def full_grid(op: Op, p: int, layout: str, data: Dataset):
    """Every (x, y) in x-major order, for measures that need the model on the whole input grid
    (even pairs an op has no answer for, e.g. y = 0 in division): tokens, labels (-1 where
    undefined), and which pairs are in the training set."""
    x = torch.arange(p).repeat_interleave(p)
    y = torch.arange(p).repeat(p)
    labels = torch.full((p * p,), -1, dtype=torch.long)
    labels[data.pairs] = data.labels
    train_mask = torch.zeros(p * p, dtype=torch.bool)
    train_mask[data.pairs[data.train_idx]] = True
    return tokens_for(op, layout, p, x, y), labels, train_mask


@dataclass
class PackBatch:
    """Examples of R runs padded to one length: tokens (R, N, T), targets (R, N) with -1 where a
    position is padding or carries no loss, and each run's example count n (R,). Padding repeats
    a run's first example, so the model sees only valid tokens; its targets of -1 exclude it."""
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
            targets.append(torch.cat([y, y.new_full((fill,), -1)]))
        return cls(torch.stack(tokens), torch.stack(targets),
                   torch.tensor([len(y) for _, y in sets], dtype=torch.long))

    def to(self, device) -> "PackBatch":
        return PackBatch(self.tokens.to(device), self.targets.to(device), self.n.to(device))

    def select(self, keep: torch.Tensor) -> "PackBatch":
        """The runs at `keep`, padded length unchanged (so each run's arithmetic is unchanged)."""
        keep = keep.to(self.tokens.device)
        return PackBatch(*(t.index_select(0, keep) for t in (self.tokens, self.targets, self.n)))
