"""Static properties of an op: its seed-004 exponent pair, and label statistics.

Everything here is computed from the parsed polynomial (`grok.ops.Op`) and its exact labels; no
op string is ever matched against a hand-written list, and sympy only ever sees integer monomial
dictionaries (never a parsed string).

Groups: grok.opkinds.op_kind.
"""

import math

import numpy as np

from grok.opkinds import as_op, monomials

# Added to every test-label probability in KL(train || test) so a label present in the train
# split but absent from the test split gives a large finite term, ln(P / 1e-10), not infinity.
KL_EPS = 1e-10


def exponent_pair(op) -> tuple[int, int] | None:
    """(a, b) when the op is exactly x^a + y^b (both coefficients 1, a, b >= 1), else None.
    x+y is (1, 1); 2x+y, x^2-y, x^2+y^2+1 and divisions are None."""
    op = as_op(op)
    if op.has_division:
        return None
    monos = monomials(op)
    if len(monos) != 2 or any(c != 1 for c in monos.values()):
        return None
    (a1, b1), (a2, b2) = sorted(monos)
    if a1 == 0 and b1 >= 1 and b2 == 0 and a2 >= 1:
        return (a2, b1)
    return None


def _entropy_bits(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis of a count array (0 log 0 = 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    q = counts / total
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def label_uniformity(op, p) -> dict:
    """How uniform the labels are over all valid pairs (seed 004 links this to grokking):
    n_labels (distinct labels), label_entropy (bits), label_entropy_ratio (entropy / log2 p,
    1 = uniform over all p residues), max_label_frac (the largest label's share), n_pairs."""
    op = as_op(op)
    p = int(p)
    _, _, z = op.labels(p)
    counts = np.bincount(z, minlength=p)
    h = float(_entropy_bits(counts))
    return {"n_labels": int(np.count_nonzero(counts)), "label_entropy": h,
            "label_entropy_ratio": h / math.log2(p), "max_label_frac": float(counts.max() / len(z)),
            "n_pairs": int(len(z))}


def split_label_stats(z, p, train_idx) -> dict:
    """Per-split statistics for a (n_splits, n_train) matrix of train indices into labels z
    (the rest of z is each split's test set). Returns float64 arrays of length n_splits:
    kl_train_test = sum over labels with P > 0 of P ln(P / (Q + KL_EPS)) (nats; P, Q the train and
    test label distributions), entropy_train and entropy_test (bits)."""
    z = np.asarray(z, dtype=np.int64)
    train_idx = np.atleast_2d(np.asarray(train_idx, dtype=np.int64))
    n_splits, n_train = train_idx.shape
    n_test = len(z) - n_train
    if n_train < 1 or n_test < 1:
        raise ValueError(f"a split of {len(z)} pairs into {n_train} train leaves an empty side")
    offsets = (np.arange(n_splits, dtype=np.int64) * p)[:, None]
    train = np.bincount((z[train_idx] + offsets).ravel(), minlength=n_splits * p)
    train = train.reshape(n_splits, p)
    test = np.bincount(z, minlength=p)[None, :] - train
    P, Q = train / n_train, test / n_test
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0) / (Q + KL_EPS)), 0.0).sum(axis=1)
    return {"kl_train_test": kl, "entropy_train": _entropy_bits(train),
            "entropy_test": _entropy_bits(test)}


def label_stats(op, p, frac, n_splits=100, seed=0) -> dict:
    """Seed 002 appendix K: mean and std (ddof=0) over `n_splits` random train/test splits of the
    KL divergence KL(train || test) between the label distributions (nats, test probabilities
    smoothed by KL_EPS) and of the train and test label entropies (bits).

    Split s takes the first round(frac * N) entries of the s-th `permutation(N)` drawn from
    `numpy.random.default_rng(seed)` (N = number of valid pairs). These are statistics of random
    splits of this size, not of the torch-seeded split a training run with `seed` uses."""
    op = as_op(op)
    p = int(p)
    _, _, z = op.labels(p)
    n = len(z)
    n_train = int(round(frac * n))
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    if not 1 <= n_train < n:
        raise ValueError(f"frac={frac!r} leaves an empty train or test set of the {n} pairs")
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.permutation(n)[:n_train] for _ in range(n_splits)])
    per = split_label_stats(z, p, idx)
    out = {}
    for key, vals in per.items():
        out[key] = float(vals.mean())
        out[key + "_std"] = float(vals.std())
    out["n_splits"] = int(n_splits)
    return out
