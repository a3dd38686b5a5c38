"""Static properties of an op: its seed-002 group, its seed-004 exponent pair, and label statistics.

Everything here is computed from the parsed polynomial (`grok.ops.Op`) and its exact labels; no
op string is ever matched against a hand-written list, and sympy only ever sees integer monomial
dictionaries (never a parsed string).

Groups (`op_kind`), checked in this order:
  division      x/y -> "elementary"; any other division -> "division".
  no cross term (no monomial x^a y^b with a > 0 and b > 0):
                degree 1, exactly the monomials x and y, both coefficients +-1, no constant
                    -> "elementary"  (x+y, x-y, y-x, -x-y)
                any other degree-1 polynomial -> "linear"
                exactly the two monomials c1*x^n and c2*y^n, same n >= 2 -> "sum of powers"
                    (so x^2-y^2 lands here, although it factors; see `is_factorizable`)
                otherwise -> "univariate terms"
  cross term:   the single monomial xy with coefficient 1 -> "elementary"
                `is_factorizable` -> "factorizable"
                multilinear (every monomial has a <= 1 and b <= 1) -> "cross term, degree 1"
                otherwise -> "cross term, degree n"
"""

import math

import numpy as np
import sympy

from grok.ops import Op, parse_op

KIND_ORDER = ("elementary", "linear", "cross term, degree 1", "univariate terms",
              "cross term, degree n", "sum of powers", "factorizable", "division")

# Added to every test-label probability in KL(train || test) so a label present in the train
# split but absent from the test split gives a large finite term, ln(P / 1e-10), not infinity.
KL_EPS = 1e-10

_X, _Y = sympy.symbols("x y")


def _as_op(op) -> Op:
    return parse_op(op) if isinstance(op, str) else op


def _monos(op: Op) -> dict:
    """The numerator as {(a, b): coef}."""
    return {(a, b): c for c, a, b in op.numerator}


def _has_cross_term(monos) -> bool:
    return any(a > 0 and b > 0 for a, b in monos)


def is_factorizable(op) -> bool:
    """Whether the (polynomial) op factors over Z into >= 2 non-constant factors, counted with
    multiplicity, each involving both x and y: (x+y)^2, (x-y)^3, x^2-y^2 = (x-y)(x+y) and
    x^3+y^3 = (x+y)(x^2-xy+y^2) are; xy, xy+y = y(x+1) and x^3+xy = x(x^2+y) are not.
    Integer content (2(x+y) = 2 * (x+y)) is not a factor. Divisions are never factorizable."""
    op = _as_op(op)
    if op.has_division:
        return False
    poly = sympy.Poly.from_dict(_monos(op), _X, _Y, domain=sympy.ZZ)
    _, factors = poly.factor_list()
    if sum(mult for _, mult in factors) < 2:
        return False
    for f, _ in factors:
        degs = f.degree_list()  # (deg in x, deg in y)
        if degs[0] == 0 or degs[1] == 0:
            return False
    return True


def op_kind(op) -> str:
    """The seed-002 group of an op (one of KIND_ORDER), by the rules in the module docstring."""
    op = _as_op(op)
    monos = _monos(op)
    if op.has_division:
        den = {(a, b): c for c, a, b in op.denominator}
        return "elementary" if monos == {(1, 0): 1} and den == {(0, 1): 1} else "division"
    if not _has_cross_term(monos):
        if op.degree == 1:
            if set(monos) == {(1, 0), (0, 1)} and all(abs(c) == 1 for c in monos.values()):
                return "elementary"
            return "linear"
        if len(monos) == 2:
            (a1, b1), (a2, b2) = sorted(monos)  # (0, n) sorts before (n, 0)
            if a1 == 0 and b2 == 0 and b1 == a2 >= 2:
                return "sum of powers"
        return "univariate terms"
    if monos == {(1, 1): 1}:
        return "elementary"
    if is_factorizable(op):
        return "factorizable"
    if all(a <= 1 and b <= 1 for a, b in monos):
        return "cross term, degree 1"
    return "cross term, degree n"


def exponent_pair(op) -> tuple[int, int] | None:
    """(a, b) when the op is exactly x^a + y^b (both coefficients 1, a, b >= 1), else None.
    x+y is (1, 1); 2x+y, x^2-y, x^2+y^2+1 and divisions are None."""
    op = _as_op(op)
    if op.has_division:
        return None
    monos = _monos(op)
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
    op = _as_op(op)
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
    op = _as_op(op)
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
