"""Binary operations mod p (the original grokking tasks): x o y = z for every pair, read at the
last position. The op language, layouts and Fourier progress measures live in grok.ops,
grok.layouts, grok.data and grok.measures; this class is how the trainer sees them."""

import numpy as np
import torch

import grok.measures as measures
from grok.config import check_modular
from grok.data import full_grid, tokens_for
from grok.layouts import N_CTX, vocab_size
from grok.tasks.base import Task


class Modular(Task):
    finite = True
    positions = (2,)
    position_names = ("z",)

    def __init__(self, cfg):
        self.name = cfg.task.name
        # the op language's checks, shared with the config check
        (self.op, self.n), self.p, self.layout = check_modular(cfg), cfg.p, cfg.model.layout
        self.vocab, self.n_out, self.n_ctx = vocab_size(self.layout, self.p), self.p, N_CTX

    def size(self) -> int:
        return self.n

    def describe(self) -> str:
        return f"{self.op.pretty} mod {self.p}"

    def universe(self):
        """Every pair with an answer, x-major (the split's order, unchanged since format 1)."""
        x, y, z = (torch.from_numpy(a).long() for a in self.op.labels(self.p))
        tokens = tokens_for(self.op, self.layout, self.p, x, y).numpy()
        targets = np.full(tokens.shape, -1, dtype=np.int64)
        targets[:, 2] = z.numpy()
        return tokens, targets

    def record(self) -> dict:
        return {"task": self.name, "task_desc": self.describe(), "op": self.op.canonical,
                "op_pretty": self.op.pretty, "p": self.p}

    def probe(self, data, device):
        """The p x p grid the Fourier measures read: tokens, labels (-1 where the op has no
        answer, e.g. y = 0 in division) and which pairs are in the training set."""
        return tuple(t.to(device) for t in full_grid(self.op, self.p, self.layout, data.train_idx))

    def measures(self, model, probe, full: bool, mc) -> dict:
        if self.skipped_measures(model):
            return measures.weight_sq(model)
        return measures.compute(model, self.p, *(probe if full else (None,) * 3), self.op,
                                eta=mc.eta, full=full, fixed_keys=mc.key_freqs)

    def skipped_measures(self, model) -> dict:
        return measures.skipped_fourier(model)
