"""Number tasks on digit sequences: multi-digit addition (seed 000), primality and GCD (seed 004).

Numbers are written most significant digit first, zero-padded to a fixed width, one token per
digit; the answer is read after "=" (and, for multi-digit answers, teacher-forced digit by digit).
Arithmetic is exact: NumPy int64 on values far below 2^63, primality by a sieve.
"""

import numpy as np
import torch

from grok.config import ConfigError
from grok.measures import weight_sq
from grok.tasks.base import Task, need_int, targets_from


def digits(n: np.ndarray, width: int, base: int) -> np.ndarray:
    """(N,) non-negative ints to (N, width) digits, most significant first."""
    powers = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (n[:, None] // powers) % base


def answer_after(seq: np.ndarray, first: int):
    """(tokens, targets) of full sequences whose answer starts at column `first`: the answer
    teacher-forced (each answer token is the target of the position before it), and the last
    token, never an input, dropped."""
    mask = np.zeros(seq.shape, dtype=bool)
    mask[:, first - 1:] = True
    return seq[:, :-1], targets_from(seq, mask)[:, :-1]


PROBE = 2048  # test examples the per-group accuracies read


def answers_right(model, tokens, targets, positions) -> np.ndarray:
    """(B,) bool: whether a single run's model gets every answer token of each example right."""
    with torch.no_grad():
        pred = model.logits_at(tokens, positions).argmax(-1)  # (B, K)
    return (pred == targets).all(-1).cpu().numpy()


def accuracy_over(right: np.ndarray, groups: dict) -> dict:
    """Accuracy within each named group of examples (a boolean mask); empty groups left out."""
    return {key: float(right[mask].mean()) for key, mask in groups.items() if mask.any()}


def _width(n_max: int, base: int) -> int:
    w = 1
    while base ** w <= n_max:
        w += 1
    return w


class DigitsAdd(Task):
    """`a_1 .. a_n + b_1 .. b_n = c_0 .. c_n` (seed 000: n = 5, 1L transformer): the model predicts
    the n+1 digits of the sum after "=", one loss per digit.

    `answer: msd_first` writes the sum as seed 000 does. Then the carry into a digit can depend on
    every lower column (a column summing to base-1 passes a carry on: 4 9 + 0 1), which a one-layer
    model reading the operands at once has to compute in one step. `lsd_first` writes the sum
    backwards, so the carry into each digit is read off the previous answer digit and its own
    column. The measures split test accuracy by whether a sum has such a carry chain."""

    finite = False

    def __init__(self, cfg):
        t = cfg.task
        self.name = t.name
        self.n = n = need_int(t, "n_digits", 1, 15)  # sums stay far inside int64
        self.base = need_int(t, "base", 2, 100)
        self.order = t.get("answer", "msd_first")
        if self.order not in ("msd_first", "lsd_first"):
            raise ConfigError(f"task.answer={self.order!r}: msd_first or lsd_first")
        self.PLUS, self.EQ = self.base, self.base + 1
        self.vocab, self.n_out = self.base + 2, self.base
        self.n_ctx = 3 * n + 2  # the last answer digit is a target, never an input
        self.positions = tuple(range(2 * n + 1, 3 * n + 2))
        names = [f"digit{i}" for i in range(n + 1)]  # digit0: the sum's leading digit
        self.position_names = tuple(names if self.order == "msd_first" else names[::-1])

    def describe(self):
        order = "" if self.order == "msd_first" else ", sum reversed"
        return f"{self.n}-digit addition, base {self.base}{order}"

    def capacity(self):
        return self.base ** (2 * self.n)

    def sample(self, n_examples, rng):
        top = self.base ** self.n
        a, b = rng.integers(0, top, n_examples), rng.integers(0, top, n_examples)
        N = len(a)
        total = digits(a + b, self.n + 1, self.base)
        if self.order == "lsd_first":
            total = total[:, ::-1]
        seq = np.concatenate([digits(a, self.n, self.base), np.full((N, 1), self.PLUS),
                              digits(b, self.n, self.base), np.full((N, 1), self.EQ),
                              total], axis=1)
        return answer_after(seq, 2 * self.n + 2)

    def carry_chain(self, tokens) -> np.ndarray:
        """(N,) bool: the sum has a column whose digits add to base-1 and that gets a carry from
        below, so the carry travels on through it (exact, from the operand tokens)."""
        t = np.asarray(tokens, dtype=np.int64)
        col = t[:, :self.n] + t[:, self.n + 1:2 * self.n + 1]  # column sums, most significant first
        carry = np.zeros(len(t), dtype=bool)
        chain = np.zeros(len(t), dtype=bool)
        for j in range(self.n - 1, -1, -1):
            chain |= carry & (col[:, j] == self.base - 1)
            carry = col[:, j] + carry >= self.base
        return chain

    def stats(self, data) -> dict:
        """Share of test sums with a carry chain (what a model that never chains gets wrong)."""
        return {"carry_chain_frac_test": float(self.carry_chain(data.test[0]).mean())}

    def probe(self, data, device):
        tokens, targets = data.test[0][:PROBE], data.test[1][:PROBE]
        return tokens.to(device), targets.to(device), self.carry_chain(tokens.cpu())

    def measures(self, model, probe, full, mc) -> dict:
        """Weight norms, and whole-sum test accuracy on sums with and without a carry chain
        (`acc_carry_chain`, `acc_no_carry_chain`)."""
        tokens, targets, chain = probe
        right = answers_right(model, tokens, targets, self.positions)
        return {**weight_sq(model), **accuracy_over(right, {"acc_carry_chain": chain,
                                                            "acc_no_carry_chain": ~chain})}


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n ** 0.5) + 1))


def primes_below(n: int) -> np.ndarray:
    """Boolean (n,) sieve of Eratosthenes: is_prime[k]."""
    is_prime = np.ones(max(n, 2), dtype=bool)
    is_prime[:2] = False
    for k in range(2, int(n ** 0.5) + 1):
        if is_prime[k]:
            is_prime[k * k::k] = False
    return is_prime[:n]


class Prime(Task):
    """Is n prime, for every n < N written in base B (seed 004: did not grok). Answer 0/1 after
    "=". A finite universe split by `frac`; the summary records the class balance, since a model
    that answers "not prime" everywhere already scores the share of composites."""

    finite = True

    def __init__(self, cfg):
        t = cfg.task
        self.name = t.name
        self.N = need_int(t, "n_max", 3, 10 ** 7)
        self.base = need_int(t, "base", 2, 100)
        self.width = _width(self.N - 1, self.base)
        self.EQ = self.base
        self.vocab, self.n_out, self.n_ctx = self.base + 1, 2, self.width + 1
        self.positions, self.position_names = (self.width,), ("is_prime",)

    def size(self):
        return self.N

    def describe(self):
        return f"primality of n < {self.N}, base {self.base}"

    def universe(self):
        n = np.arange(self.N, dtype=np.int64)
        tokens = np.concatenate([digits(n, self.width, self.base), np.full((self.N, 1), self.EQ)], axis=1)
        targets = np.full(tokens.shape, -1, dtype=np.int64)
        targets[:, -1] = primes_below(self.N).astype(np.int64)
        return tokens, targets

    def stats(self, data) -> dict:
        """Share of primes in the train and test sets (the majority-class baseline)."""
        return {f"prime_frac_{k}": float((y[:, 0] == 1).double().mean()) for k, y in
                (("train", data.train[1]), ("test", data.test[1]))}


class GCD(Task):
    """gcd(a, b) for 1 <= a, b < N in base B, decoder-only: `a SEP b = g` with g's digits
    teacher-forced (seed 004 used an encoder-decoder and saw no grokking in base 10). Operands
    drawn uniformly or log-uniformly (`sampling`); log-uniform puts more small numbers, hence
    more large gcds, in the data."""

    finite = False

    def __init__(self, cfg):
        t = cfg.task
        self.name = t.name
        self.N = need_int(t, "n_max", 3, 10 ** 12)
        self.base = need_int(t, "base", 2, 100)
        if t.get("sampling") not in ("uniform", "log_uniform"):
            raise ConfigError(f"task.sampling={t.get('sampling')!r}: uniform or log_uniform")
        self.sampling = t.sampling
        self.w = _width(self.N - 1, self.base)
        self.SEP, self.EQ = self.base, self.base + 1
        self.vocab, self.n_out, self.n_ctx = self.base + 2, self.base, 3 * self.w + 1
        self.positions = tuple(range(2 * self.w + 1, 3 * self.w + 1))
        self.position_names = tuple(f"digit{i}" for i in range(self.w))

    def describe(self):
        return f"gcd of a, b < {self.N}, base {self.base}, {self.sampling}"

    def capacity(self):
        return (self.N - 1) ** 2

    def _operands(self, n, rng):
        if self.sampling == "uniform":
            return rng.integers(1, self.N, n)
        return np.clip(np.exp(rng.uniform(0, np.log(self.N), n)).astype(np.int64), 1, self.N - 1)

    def gcd_of(self, targets) -> np.ndarray:
        """gcd values (N,) from targets (N, w): the answer digits, most significant first."""
        y = np.asarray(targets, dtype=np.int64)
        return y @ (self.base ** np.arange(self.w - 1, -1, -1, dtype=np.int64))

    def smooth(self, g: np.ndarray) -> np.ndarray:
        """Which g have only prime factors of the base (Charton: the gcds a model in base B
        learns first are products of the primes dividing B)."""
        g = g.copy()
        for q in (q for q in range(2, self.base + 1) if self.base % q == 0 and is_prime(q)):
            while (hit := g % q == 0).any():  # g >= 1: operands are >= 1
                g[hit] //= q
        return g == 1

    def stats(self, data) -> dict:
        """Share of coprime pairs (gcd 1: what a model that always answers 1 scores)."""
        out = {"gcd1_frac_test": float((self.gcd_of(data.test[1]) == 1).mean())}
        if data.train is not None:
            out["gcd1_frac_train"] = float((self.gcd_of(data.train[1]) == 1).mean())
        return out

    def probe(self, data, device):
        tokens, targets = data.test[0][:PROBE], data.test[1][:PROBE]
        return tokens.to(device), targets.to(device), self.gcd_of(targets.cpu())

    def measures(self, model, probe, full, mc) -> dict:
        """Weight norms, and test accuracy by gcd: `acc_by_gcd/<g>` for g = 1..10 (when the probe
        has at least 10 of them), and over gcds made of the base's primes or not
        (`acc_gcd_smooth`, `acc_gcd_other`)."""
        tokens, targets, g = probe
        right = answers_right(model, tokens, targets, self.positions)
        smooth = self.smooth(g)
        groups = {f"acc_by_gcd/{v}": g == v for v in range(1, 11) if (g == v).sum() >= 10}
        return {**weight_sq(model), **accuracy_over(right, {
            **groups, "acc_gcd_smooth": smooth, "acc_gcd_other": ~smooth})}

    def sample(self, n, rng):
        a, b = self._operands(n, rng), self._operands(n, rng)
        seq = np.concatenate([digits(a, self.w, self.base), np.full((n, 1), self.SEP),
                              digits(b, self.w, self.base), np.full((n, 1), self.EQ),
                              digits(np.gcd(a, b), self.w, self.base)], axis=1)
        return answer_after(seq, 2 * self.w + 2)
