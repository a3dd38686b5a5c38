"""Several modular ops learned by one model (seed 002's multi-task mixtures): every pair of every
op, each op with its own operation token, trained full batch together.

Tokens: op i of `ops` (in the order given) is token p + 1 + i, so the vocabulary is p + n_ops + 1
(p itself is `=`, unused by a mixture). The op token takes the place of `=` in the nanda layout,
[x, y, op_i], and of the op token in the furuta layout, [x, op_i, y]. Single-op runs keep their
tokens (grok.data.tokens_for).

Split: each op's pairs are split by `frac` on their own, with the shuffle a single run of that op
has at the same seed; so a mixture's x+y train pairs are exactly those of the x+y run beside it.

Records: per op `train_loss/<op>`, `train_acc/<op>`, `test_loss/<op>`, `test_acc/<op>` at every
eval (op canonical, e.g. `test_acc/xy`), a verdict per op in the summary (`per_op`), and the
whole's `train_acc`/`test_acc`/verdict over the union. The weight-only Fourier measures (W_E of
the number tokens, W_L) are the model's and logged once; the grid measures (key frequencies,
restricted and excluded loss) are per op: the model on that op's p x p grid, `<measure>/<op>`.
"""

import numpy as np
import torch

import grok.measures as measures
from grok.config import ConfigError, check_int, select, view
from grok.data import full_grid, tokens_for
from grok.losses import accuracy, loss_fn
from grok.ops import MAX_P, OpError, parse_op
from grok.tasks.base import Task

# Grid measures that depend on the op (its grid of inputs); the rest are the weights'.
OP_MEASURES = ("key_freqs", "n_key_freqs", "key_freq_neuron_frac", "neuron_freq",
               "neuron_freq_var_frac", "restricted_loss", "excluded_loss")


def check_ops(cfg) -> tuple[list, list[int]]:
    """The mixture's ops, parsed and checked one by one against p (each must parse, fit p and be
    learnable mod p; no op twice), and the number of labelled pairs of each."""
    c = view(cfg)
    texts = select(c, "ops")
    p = check_int(c, "p", lo=2, hi=MAX_P)
    if select(c, "op") is not None:  # `op: ${task.op}`, null for a mixture unless given
        raise ConfigError(f"op={select(c, 'op')!r}: task=mixture trains the ops of ops={texts}, "
                          f"not op (drop op=, or use task=poly for one op)")
    if not isinstance(texts, list) or not texts:
        raise ConfigError(f"ops={texts!r}: must be a non-empty list of ops, e.g. ops=[x+y,x*y]")
    ops, sizes, seen = [], [], {}
    for i, text in enumerate(texts):
        if not isinstance(text, (str, int)) or isinstance(text, bool):
            raise ConfigError(f"ops[{i}]={text!r}: must be an op, e.g. x+y")
        try:
            op = parse_op(str(text))
            op.check_p(p)
            n = op.check_learnable(p)
        except OpError as e:
            raise ConfigError(f"ops[{i}]: {' '.join(str(e).split())}") from None
        if op.canonical in seen:
            raise ConfigError(f"ops[{i}]={text!r}: the same op as ops[{seen[op.canonical]}]="
                              f"{texts[seen[op.canonical]]!r} (each op once)")
        seen[op.canonical] = i
        table = _table(op, p)
        for j, other in enumerate(ops):  # one op spelled twice mod p: one task token too many
            if _table(other, p) == table:
                raise ConfigError(f"ops[{i}]={text!r}: the same op as ops[{j}]={texts[j]!r} mod "
                                  f"p={p} (the same label for every pair; each op once)")
        ops.append(op)
        sizes.append(n)
    return ops, sizes


def _table(op, p: int) -> bytes:
    """An op's label table at p, as bytes to compare: two ops with one table are one op mod p."""
    return b"".join(a.tobytes() for a in op.labels(p))


class Mixture(Task):
    finite = True
    positions = (2,)
    position_names = ("z",)

    def __init__(self, cfg):
        self.name = "mixture"
        self.ops, self.sizes = check_ops(cfg)
        self.p, self.layout = cfg.p, cfg.model.layout
        self.vocab, self.n_out, self.n_ctx = self.p + len(self.ops) + 1, self.p, 3
        self.groups = tuple(op.canonical for op in self.ops)
        # where the op token sits: the answer position in nanda, the middle in furuta
        self.op_pos = 2 if self.layout == "nanda" else 1

    def op_token(self, i: int) -> int:
        return self.p + 1 + i

    def size(self) -> int:
        return sum(self.sizes)

    def part_sizes(self) -> list[int]:
        return list(self.sizes)

    def describe(self) -> str:
        return "{" + ", ".join(op.pretty for op in self.ops) + f"}} mod {self.p}"

    def universe(self):
        """Each op's pairs in turn (x-major within an op)."""
        tokens, targets = [], []
        for i, op in enumerate(self.ops):
            x, y, z = (torch.from_numpy(a).long() for a in op.labels(self.p))
            t = tokens_for(op, self.layout, self.p, x, y, self.op_token(i)).numpy()
            y_ = np.full(t.shape, -1, dtype=np.int64)
            y_[:, 2] = z.numpy()
            tokens.append(t)
            targets.append(y_)
        return np.concatenate(tokens), np.concatenate(targets)

    def split(self, n: int, frac: float, seed: int):
        """Each op's block split on its own, as a single run of that op at this seed splits it."""
        train, test, start = [], [], 0
        for size in self.sizes:
            tr, te = super().split(size, frac, seed)
            train.append(tr + start)
            test.append(te + start)
            start += size
        return torch.cat(train), torch.cat(test)

    def record(self) -> dict:
        return {"task": self.name, "task_desc": self.describe(), "ops": list(self.groups),
                "ops_pretty": [op.pretty for op in self.ops], "mixture": "{" + ", ".join(self.groups) + "}",
                "p": self.p}

    # -- per-op scores ---------------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, model, data) -> dict:
        """Loss and accuracy of each op on its train and test pairs (float64 loss)."""
        out = {}
        for side, (tokens, targets) in (("train", data.train), ("test", data.test)):
            device = next(model.parameters()).device
            tokens, targets = tokens.to(device), targets.to(device)
            logits = model.logits_at(tokens, self.positions)  # (N, K, C)
            which = tokens[:, self.op_pos] - (self.p + 1)
            for i, name in enumerate(self.groups):
                keep = which == i
                lg, tg = logits[keep], targets[keep]
                out[f"{side}_loss/{name}"] = loss_fn(lg.flatten(0, 1), tg.flatten()).item()
                out[f"{side}_acc/{name}"] = accuracy(lg, tg).item()
        return out

    # -- progress measures -----------------------------------------------------------------------

    def probe(self, data, device):
        """Each op's p x p grid (tokens with its op token, labels, its train pairs)."""
        out, start = [], 0
        for i, (op, size) in enumerate(zip(self.ops, self.sizes)):
            idx = data.train_idx
            mine = idx[(idx >= start) & (idx < start + size)] - start
            grid = full_grid(op, self.p, self.layout, mine, self.op_token(i))
            out.append(tuple(t.to(device) for t in grid))
            start += size
        return out

    def skipped_measures(self, model) -> dict:
        return measures.skipped_fourier(model)

    def measures(self, model, probe, full: bool, mc) -> dict:
        if self.skipped_measures(model):
            return measures.weight_sq(model)
        kw = dict(eta=mc.eta, fixed_keys=mc.key_freqs)
        out = measures.compute(model, self.p, None, None, None, self.ops[0], full=False, **kw)
        if not full:
            return out
        for op, name, grid in zip(self.ops, self.groups, probe):
            for k, v in measures.compute(model, self.p, *grid, op, full=True, **kw).items():
                if k in OP_MEASURES:
                    out[f"{k}/{name}"] = v
                elif k not in out:
                    out[k] = v
        return out
