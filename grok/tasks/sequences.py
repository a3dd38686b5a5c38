"""Sequence tasks of seeds 000 and 004, built for the circuits they need: repeated subsequences
(induction heads, 2L attention-only), the max element (skip trigrams, 1L attention-only) and
sorting (1L attention-only)."""

import numpy as np
import torch

import grok.probes as probes
from grok.config import ConfigError
from grok.sampling import rng_for
from grok.tasks.base import IGNORE, Task, need_int, targets_from


class RepeatSubseq(Task):
    """Uniform random tokens with one span repeated later, then END, e.g.
    `7 2 [8 3 1 9] 3 [8 3 1 9] 9 2 5 END`; the loss is on the repeated tokens that can be
    predicted (every token of the second copy after its first). Only an induction circuit (a
    previous-token head composing with an induction head) solves it."""

    finite = False

    def __init__(self, cfg):
        t = cfg.task
        self.name = t.name
        self.n_tokens = need_int(t, "n_tokens", 2, 10 ** 5)
        self.length = need_int(t, "length", 4, 4096)        # tokens before END
        self.span_min = need_int(t, "span_min", 2)
        self.span_max = need_int(t, "span_max", self.span_min)
        if 2 * self.span_max > self.length:
            raise ConfigError(f"task.span_max={self.span_max}: two copies do not fit in "
                              f"task.length={self.length}")
        self.END = self.n_tokens
        self.vocab, self.n_out, self.n_ctx = self.n_tokens + 1, self.n_tokens, self.length + 1
        self.positions = tuple(range(self.span_min, self.length - 1))
        self.position_names = tuple(f"pos{i}" for i in self.positions)

    def describe(self):
        return (f"repeated subsequence, {self.n_tokens} tokens, length {self.length}, "
                f"span {self.span_min}-{self.span_max}")

    def capacity(self):
        return self.n_tokens ** (self.length - self.span_max)  # at least; far above any n_train

    def sample(self, n, rng):
        seq = rng.integers(0, self.n_tokens, (n, self.length + 1))
        seq[:, -1] = self.END
        mask = np.zeros(seq.shape, dtype=bool)
        span = rng.integers(self.span_min, self.span_max + 1, n)
        for i in range(n):
            L = span[i]
            a = rng.integers(0, self.length - 2 * L + 1)          # first copy
            b = rng.integers(a + L, self.length - L + 1)          # second copy, after it
            seq[i, b:b + L] = seq[i, a:a + L]
            mask[i, b:b + L - 1] = True  # position t predicts token t+1 (inside the copy)
        return seq, targets_from(seq, mask)

    def probe(self, data, device):
        """Repeated random tokens `r_0 .. r_{h-1} r_0 .. r_{h-1}` (the induction-head probe)."""
        h = self.length // 2
        r = rng_for(0, 3).integers(0, self.n_tokens, (256, h))
        return torch.from_numpy(np.concatenate([r, r], axis=1)).to(device)

    def measures(self, model, probe, full, mc) -> dict:
        return {**probes.weight_sq(model), **probes.induction(model, probe)}

    def skipped_measures(self, model) -> dict:
        return probes.skipped(model, "induction")


class MaxElement(Task):
    """`START x_1 .. x_n END` with exactly one largest entry; the model outputs it after END
    (seed 000: 1L attention-only learns one skip trigram `v .. END v` per possible maximum, each
    with its own phase change)."""

    finite = False

    def __init__(self, cfg):
        t = cfg.task
        self.name = t.name
        self.n_values = need_int(t, "n_values", 2, 10 ** 5)
        self.length = need_int(t, "length", 2, 4096)
        self.START, self.END = self.n_values, self.n_values + 1
        self.vocab, self.n_out, self.n_ctx = self.n_values + 2, self.n_values, self.length + 2
        self.positions, self.position_names = (self.length + 1,), ("max",)

    def describe(self):
        return f"max of {self.length} values < {self.n_values}"

    def capacity(self):
        """Sequences whose largest value v occurs once: length * v^(length-1) for each v."""
        return sum(self.length * v ** (self.length - 1) for v in range(1, self.n_values))

    def sample(self, n, rng):
        rows = []
        while sum(len(r) for r in rows) < n:
            x = rng.integers(0, self.n_values, (2 * n, self.length))
            top = x.max(1, keepdims=True)
            rows.append(x[(x == top).sum(1) == 1])
        x = np.concatenate(rows)[:n]
        tokens = np.concatenate([np.full((n, 1), self.START), x, np.full((n, 1), self.END)], axis=1)
        targets = np.full(tokens.shape, IGNORE, dtype=np.int64)
        targets[:, -1] = x.max(1)
        return tokens, targets

    def probe(self, data, device):
        return data.test[0][:512].to(device)

    def measures(self, model, probe, full, mc) -> dict:
        return {**probes.weight_sq(model), **probes.attention_to_max(model, probe)}

    def skipped_measures(self, model) -> dict:
        return probes.skipped(model, "attn_to_max")


class Sort(Task):
    """`START x_1 .. x_k MID s_1 .. s_k` (seed 004): after MID the model writes the sorted list,
    teacher-forced. Fixed length (k = length) or variable (k uniform in min_length..length,
    padded with PAD, no loss on padding)."""

    finite = False

    def __init__(self, cfg):
        t = cfg.task
        self.name = t.name
        self.n_values = need_int(t, "n_values", 2, 10 ** 5)
        self.length = need_int(t, "length", 1, 2048)
        self.min_length = need_int(t, "min_length", 1)
        if self.min_length > self.length:
            raise ConfigError(f"task.min_length={self.min_length}: longer than "
                              f"task.length={self.length}")
        self.START, self.MID, self.PAD = self.n_values, self.n_values + 1, self.n_values + 2
        self.vocab, self.n_out = self.n_values + 3, self.n_values
        self.n_ctx = 2 * self.length + 1
        self.positions = tuple(range(self.min_length + 1, 2 * self.length + 1))
        self.position_names = tuple(f"pos{i}" for i in self.positions)

    def describe(self):
        k = self.length if self.min_length == self.length else f"{self.min_length}-{self.length}"
        return f"sort {k} values < {self.n_values}"

    def capacity(self):
        return sum(self.n_values ** k for k in range(self.min_length, self.length + 1))

    def sample(self, n, rng):
        seq = np.full((n, 2 * self.length + 2), self.PAD, dtype=np.int64)
        mask = np.zeros(seq.shape, dtype=bool)
        k = rng.integers(self.min_length, self.length + 1, n)
        x = rng.integers(0, self.n_values, (n, self.length))
        seq[:, 0] = self.START
        for i in range(n):
            L = k[i]
            seq[i, 1:L + 1] = x[i, :L]
            seq[i, L + 1] = self.MID
            seq[i, L + 2:2 * L + 2] = np.sort(x[i, :L])
            mask[i, L + 1:2 * L + 1] = True
        return seq[:, :-1], targets_from(seq, mask)[:, :-1]
