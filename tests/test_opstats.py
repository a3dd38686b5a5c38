"""grok.opkinds and analysis.opstats: seed-002 groups from the polynomial, exponent pairs, label stats."""

import math
from collections import Counter

import numpy as np
import pytest

from analysis.opstats import (
    KL_EPS,
    exponent_pair,
    label_stats,
    label_uniformity,
    split_label_stats,
)
from grok.opkinds import KIND_ORDER, is_factorizable, op_kind
from grok.ops import parse_op

# Seed 002 (Furuta et al.), Appendix I, Table 5, written in the op language.
SEED002 = {
    "elementary": ["x+y", "x-y", "x*y", "x/y"],
    "linear": ["2x+y", "2x-y", "2x+3y", "2x-3y"],
    "cross term, degree 1": ["xy+x+y", "xy+y", "xy-y"],
    "univariate terms": ["x2+y", "x2-y", "x3+2y", "x3-2y"],
    "cross term, degree n": ["x2+xy+y2", "x2+xy+y2+x", "x3+xy", "x3+xy2+y"],
    "sum of powers": [f"x^{n}+y^{n}" for n in range(2, 8)],
    "factorizable": ["(x+y)^2", "(x+y)^2+x+y", "(x-y)^2", *[f"(x+y)^{n}" for n in range(3, 8)],
                     "(x-y)^3", "(x-y)^4"],
}
CASES = [(op, kind) for kind, ops in SEED002.items() for op in ops]


def test_kind_order():
    assert KIND_ORDER == ("elementary", "linear", "cross term, degree 1", "univariate terms",
                          "cross term, degree n", "sum of powers", "factorizable", "division")


@pytest.mark.parametrize("op,kind", CASES)
def test_seed002_table(op, kind):
    assert op_kind(op) == kind
    assert op_kind(parse_op(op)) == kind  # an Op works as well as a string


def test_difference_of_squares():
    assert op_kind("x2-y2") in ("sum of powers", "factorizable")
    assert is_factorizable("x2-y2")


@pytest.mark.parametrize("op,expected", [
    ("(x+y)^2", True), ("(x-y)^4", True), ("(x+y)^2+x+y", True), ("x^3+y^3", True),
    ("2(x+y)^2", True), ("x*y", False), ("xy+y", False), ("x3+xy", False), ("x^2+y^2", False),
    ("x^4+y^4", False), ("2x+2y", False), ("x/y", False), ("(x+y)^2/y", False)])
def test_is_factorizable(op, expected):
    assert is_factorizable(op) is expected


@pytest.mark.parametrize("op,kind", [
    ("y-x", "elementary"), ("-x-y", "elementary"), ("x", "linear"), ("x+y+1", "linear"),
    ("2xy", "cross term, degree 1"), ("xy+1", "cross term, degree 1"), ("x^2", "univariate terms"),
    ("x^2+y^3", "univariate terms"), ("2x^3-5y^3", "sum of powers"), ("x^2+y^2+1", "univariate terms"),
    ("y/x", "division"), ("(x+y)/y", "division"), ("x/2y", "division"),
    ("xy^2", "cross term, degree n")])
def test_other_ops(op, kind):
    assert op_kind(op) == kind


@pytest.mark.parametrize("op,pair", [
    ("x+y", (1, 1)), ("y+x", (1, 1)), ("x^2+y^3", (2, 3)), ("y^9+x^4", (4, 9)), ("x2+y", (2, 1)),
    ("x-y", None), ("2x+y", None), ("x^2-y^2", None), ("x^2+y^2+1", None), ("x^2+xy", None),
    ("(x+y)^2", None), ("x", None), ("x/y", None), ("x^2+x", None)])
def test_exponent_pair(op, pair):
    assert exponent_pair(op) == pair


def test_uniformity_uniform():
    u = label_uniformity("x+y", 7)
    assert u["n_labels"] == 7
    assert u["label_entropy"] == pytest.approx(math.log2(7))
    assert u["label_entropy_ratio"] == pytest.approx(1.0)
    assert u["max_label_frac"] == pytest.approx(1 / 7)


def test_uniformity_sum_of_squares_brute_force():
    p = 7
    counts = Counter((x * x + y * y) % p for x in range(p) for y in range(p))
    n = p * p
    assert len(set(counts.values())) > 1  # not uniform at this p
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    u = label_uniformity("x^2+y^2", p)
    assert u["n_labels"] == len(counts)
    assert u["label_entropy"] == pytest.approx(entropy)
    assert u["label_entropy_ratio"] == pytest.approx(entropy / math.log2(p))
    assert u["label_entropy_ratio"] < 1
    assert u["max_label_frac"] == pytest.approx(max(counts.values()) / n)


def test_uniformity_division_drops_zero_divisor():
    u = label_uniformity("x/y", 5)
    assert u["n_pairs"] == 20 and u["n_labels"] == 5


def _brute_split(z, p, train):
    """One split, plainly: counts by Counter, sums by Python loops."""
    train_set = set(train)
    tr = Counter(int(z[i]) for i in train)
    te = Counter(int(z[i]) for i in range(len(z)) if i not in train_set)
    n_tr, n_te = sum(tr.values()), sum(te.values())
    kl = sum(c / n_tr * math.log((c / n_tr) / (te[k] / n_te + KL_EPS)) for k, c in tr.items())
    h_tr = -sum(c / n_tr * math.log2(c / n_tr) for c in tr.values())
    h_te = -sum(c / n_te * math.log2(c / n_te) for c in te.values())
    return kl, h_tr, h_te


@pytest.mark.parametrize("op,p,frac", [("x^2+y^2", 11, 0.3), ("x+y", 13, 0.5), ("x/y", 7, 0.4),
                                       ("x^3+xy", 5, 0.8)])
def test_label_stats_brute_force(op, p, frac):
    seed, n_splits = 3, 3
    _, _, z = parse_op(op).labels(p)
    n = len(z)
    n_train = round(frac * n)
    rng = np.random.default_rng(seed)
    per = [_brute_split(z, p, list(rng.permutation(n)[:n_train])) for _ in range(n_splits)]
    got = label_stats(op, p, frac, n_splits=n_splits, seed=seed)
    assert got["n_splits"] == n_splits
    for j, key in enumerate(["kl_train_test", "entropy_train", "entropy_test"]):
        vals = [row[j] for row in per]
        mean = sum(vals) / n_splits
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / n_splits)
        assert got[key] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert got[key + "_std"] == pytest.approx(std, rel=1e-6, abs=1e-12)


def test_kl_zero_when_train_and_test_match():
    # x+y: every row x = const holds each label once, so whole rows as the train set give
    # uniform train and test distributions; KL(train || test) is 0 up to the epsilon.
    p = 7
    _, _, z = parse_op("x+y").labels(p)
    train = np.arange(3 * p)[None, :]  # rows x = 0, 1, 2 (x-major order)
    per = split_label_stats(z, p, train)
    assert abs(per["kl_train_test"][0]) < 1e-6
    assert per["entropy_train"][0] == pytest.approx(math.log2(p))
    assert per["entropy_test"][0] == pytest.approx(math.log2(p))


def test_kl_missing_test_label_is_finite():
    z = np.array([0, 0, 1, 1])
    per = split_label_stats(z, 2, np.array([[0, 2]]))   # train {0, 1}, test {0, 1}
    assert abs(per["kl_train_test"][0]) < 1e-6
    per = split_label_stats(z, 2, np.array([[0, 1, 2]]))  # label 0 absent from the test set
    kl = per["kl_train_test"][0]
    assert np.isfinite(kl) and kl == pytest.approx(2 / 3 * math.log(2 / 3 / KL_EPS)
                                                    + 1 / 3 * math.log(1 / 3 / (1 + KL_EPS)))


def test_label_stats_ranges_and_determinism():
    p = 23
    a = label_stats("x^2+y^2", p, 0.3, n_splits=20, seed=5)
    b = label_stats("x^2+y^2", p, 0.3, n_splits=20, seed=5)
    c = label_stats("x^2+y^2", p, 0.3, n_splits=20, seed=6)
    assert a == b and a != c
    assert a["kl_train_test"] > 0
    for key in ("entropy_train", "entropy_test"):
        assert 0 <= a[key] <= math.log2(p) + 1e-12


def test_label_stats_bad_frac():
    with pytest.raises(ValueError):
        label_stats("x+y", 5, 0.0)
    with pytest.raises(ValueError):
        label_stats("x+y", 5, 1.0)


def test_label_stats_fast():
    import time
    t = time.perf_counter()
    label_stats("x+y", 97, 0.3, n_splits=100)
    assert time.perf_counter() - t < 0.5
