"""Progress measures against constructed ground truth: weights, activations and logits built from
known frequencies, whose measures follow from the definitions by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grok import measures as M
from grok.data import tokens_for
from grok.models.tables import Transformer
from grok.ops import parse_op


def wave(p, k, kind="cos"):
    """cos or sin(2 pi k t / p) over t = 0..p-1, not normalised."""
    t = torch.arange(p, dtype=torch.float64)
    return (torch.cos if kind == "cos" else torch.sin)(2 * math.pi * k * t / p)


def grid(p):
    """x, y over the p*p grid in x-major order."""
    x = torch.arange(p).repeat_interleave(p)
    return x, torch.arange(p).repeat(p)


def pairwise_gini(x):
    """Gini as mean absolute difference / (2 * mean): independent of the sorted formula."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return ((x[:, None] - x[None, :]).abs().sum() / (2 * len(x) ** 2 * x.mean())).item()


# -- basis ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [2, 5, 7, 10, 59, 64, 113])
def test_basis_is_orthonormal_with_named_rows(p):
    B = M.fourier_basis(p)
    assert B.shape == (p, p) and B.dtype == torch.float64
    torch.testing.assert_close(B @ B.T, torch.eye(p, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(B[0], torch.full((p,), p ** -0.5, dtype=torch.float64))
    labels = M.basis_labels(p)
    assert len(labels) == p and labels[:3] == ["const", "cos1", "sin1"][:p]
    k = 2 if p > 4 else 1
    i = labels.index(f"sin{k}") if f"sin{k}" in labels else None
    if i is not None:
        torch.testing.assert_close(B[i], wave(p, k, "sin") * math.sqrt(2 / p))
    if p % 2 == 0:  # Nyquist: one cos row (-1)^t / sqrt(p), no sin
        assert labels[-1] == f"cos{p // 2}" and f"sin{p // 2}" not in labels
        torch.testing.assert_close(B[-1], wave(p, p // 2) / math.sqrt(p), atol=1e-12, rtol=0)


@pytest.mark.parametrize("p", [7, 8, 23])
def test_fourier_2d_round_trips_and_finds_a_product_wave(p):
    A = torch.randn(p, p, 3, dtype=torch.float64)
    torch.testing.assert_close(M.inverse_fourier_2d(M.fourier_2d(A)), A)
    torch.testing.assert_close(M.fourier_2d(M.inverse_fourier_2d(A)), A)
    # cos(w_2 x) sin(w_3 y), unit-normalised, is the single coefficient (cos2, sin3).
    prod = torch.outer(wave(p, 2), wave(p, 3, "sin")) * (2 / p)
    F = M.fourier_2d(prod)
    labels = M.basis_labels(p)
    want = torch.zeros(p, p, dtype=torch.float64)
    want[labels.index("cos2"), labels.index("sin3")] = 1
    torch.testing.assert_close(F, want, atol=1e-12, rtol=0)


# -- Fourier norms, FFS, FCR, Gini ---------------------------------------------------------------

def known_embedding(p, amps, d=32):
    """W (p, d): column 2i = amps[f] cos(w_f t), column 2i+1 = amps[f] sin(w_f t)."""
    W = torch.zeros(p, d, dtype=torch.float64)
    for i, (f, a) in enumerate(amps.items()):
        W[:, 2 * i], W[:, 2 * i + 1] = a * wave(p, f), a * wave(p, f, "sin")
    return W


def test_known_frequencies_give_their_norms_ffs_and_gini():
    p, K = 59, 29
    amps = {3: 1.0, 10: 0.8, 17: 0.6}
    W = known_embedding(p, amps)
    labels = M.basis_labels(p)
    want = torch.zeros(p, dtype=torch.float64)
    for f, a in amps.items():  # |b^T W| = a * sum cos^2 * sqrt(2/p) = a sqrt(p/2)
        want[labels.index(f"cos{f}")] = want[labels.index(f"sin{f}")] = a * math.sqrt(p / 2)
    norms = M.fourier_norms(W)
    torch.testing.assert_close(norms, want, atol=1e-10, rtol=0)
    coeffs = M.fourier_coeffs(W)
    assert M.ffs(coeffs) == pytest.approx(6 / (2 * K))      # all six above 0.5 of their max
    assert M.ffs(coeffs, eta=0.7) == pytest.approx(4 / (2 * K))  # 0.6 drops out, cos and sin
    assert M.gini(norms) == pytest.approx(pairwise_gini(want), abs=1e-9)
    assert M.gini(norms) > 0.9


def test_model_coefficient_matrices_use_the_number_tokens_and_the_logit_axis():
    p, d = 13, 16
    model = Transformer(vocab=p + 1, n_out=p, d_model=d, n_heads=2, d_head=8, d_mlp=24)
    amps = {2: 1.0, 5: 0.5}
    with torch.no_grad():
        model.W_E[:p] = known_embedding(p, amps, d).float()
        model.W_E[p] = 100.0  # the "=" token must not count
        u, v = torch.eye(d)[0], torch.eye(d)[1]
        model.W_U.copy_(torch.outer(u, wave(p, 3)) + torch.outer(v, wave(p, 5, "sin")))
    labels = M.basis_labels(p)
    embed = M.embed_fourier(model, p).norm(dim=1)
    assert embed.shape == (p,)
    assert embed[labels.index("cos5")].item() == pytest.approx(0.5 * math.sqrt(p / 2), rel=1e-6)
    assert embed[0].item() == pytest.approx(0, abs=1e-5)
    wl = M.wl_fourier(model, p)
    assert wl.shape == (p, 24)
    W_out = model.W_out.detach().double()
    want = torch.zeros(p, dtype=torch.float64)
    want[labels.index("cos3")] = math.sqrt(p / 2) * (W_out @ u.double()).norm()
    want[labels.index("sin5")] = math.sqrt(p / 2) * (W_out @ v.double()).norm()
    torch.testing.assert_close(wl.norm(dim=1), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [31, 32])
def test_fcr_cos_only_balanced_and_half(p):
    K = (p - 1) // 2
    torch.manual_seed(0)
    coef = torch.rand(K) + 0.5
    cos_only = torch.stack([c * wave(p, k) for k, c in zip(range(1, K + 1), coef)], 1)
    sin_half = torch.stack([0.5 * c * wave(p, k, "sin") for k, c in zip(range(1, K + 1), coef)], 1)
    assert M.fcr(M.fourier_coeffs(cos_only)) == pytest.approx(0, abs=1e-12)
    assert M.fcr(M.fourier_coeffs(torch.cat([cos_only, sin_half], 1))) == pytest.approx(0.5)
    # Balanced: each frequency's cos and sin carry vectors of equal norm (a permutation).
    a = torch.randn(K, 8, dtype=torch.float64)
    W = sum(torch.outer(wave(p, k), a[k - 1]) + torch.outer(wave(p, k, "sin"), a[k - 1].flip(0))
            for k in range(1, K + 1))
    assert M.fcr(M.fourier_coeffs(W)) == pytest.approx(1)
    assert M.ffs(M.fourier_coeffs(W), eta=0.0) == 1.0
    if p % 2 == 0:  # the unpaired Nyquist row is ignored by both
        nyq = W + 50 * torch.outer(wave(p, p // 2), torch.ones(8, dtype=torch.float64))
        assert M.fcr(M.fourier_coeffs(nyq)) == pytest.approx(1)
        assert M.ffs(M.fourier_coeffs(nyq)) == M.ffs(M.fourier_coeffs(W))


def test_fcr_counts_an_absent_frequency_as_unbalanced():
    p = 11
    W = torch.outer(wave(p, 2), torch.ones(3)) + torch.outer(wave(p, 2, "sin"), torch.ones(3))
    assert M.fcr(M.fourier_coeffs(W)) == pytest.approx(1 / 5)  # 1 balanced of K = 5
    zero = torch.zeros(p, 4, dtype=torch.float64)
    assert M.fcr(M.fourier_coeffs(zero)) == 0 and M.ffs(M.fourier_coeffs(zero)) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=40).filter(lambda v: sum(v) > 1e-6))
def test_gini_matches_the_mean_absolute_difference(values):
    x = torch.tensor(values, dtype=torch.float64)
    assert M.gini(x) == pytest.approx(pairwise_gini(x), abs=1e-9)


def test_gini_extremes():
    assert M.gini(torch.ones(10)) == pytest.approx(0, abs=1e-12)
    assert M.gini(torch.eye(10)[3]) == pytest.approx(9 / 10)
    assert M.gini(torch.zeros(5)) == 0


# -- key frequencies -----------------------------------------------------------------------------

def test_key_frequencies_of_constructed_neurons():
    p = 23
    x, y = grid(p)
    w = lambda k: 2 * math.pi * k / p  # noqa: E731
    neurons = [
        (torch.cos(w(2) * (x + y)), 2),
        (torch.sin(w(5) * (x - y)) + 3, 5),
        (torch.cos(w(9) * x) * torch.cos(w(9) * y), 9),
        (torch.cos(w(9) * x) + 0.5 * torch.sin(w(9) * y), 9),  # const x cos, sin x const
        (torch.cos(w(2) * x) * torch.sin(w(2) * y) + 7, 2),
    ]
    A = torch.stack([n.double() for n, _ in neurons]
                    + [torch.cos(w(4) * x) + torch.cos(w(11) * y),   # split 50/50: not key
                       # squared norms p^2/4 (freq 4) and p^2/2 (freq 11): 2/3 in 11, not key
                       torch.cos(w(4) * x) * torch.cos(w(4) * y) + torch.cos(w(11) * (x - y)),
                       torch.full((p * p,), 2.0, dtype=torch.float64)], 1)  # dead
    key, freq, frac = M.key_frequencies(A.float(), p)
    assert key == [2, 5, 9]
    assert freq[:5].tolist() == [k for _, k in neurons]
    torch.testing.assert_close(frac[:5], torch.ones(5, dtype=torch.float64), atol=1e-6, rtol=0)
    assert frac[5].item() == pytest.approx(0.5, abs=1e-6) and freq[5].item() in (4, 11)
    assert frac[6].item() == pytest.approx(2 / 3, abs=1e-6) and freq[6].item() == 11
    assert frac[7].item() == 0


def test_key_frequency_at_nyquist_for_even_p():
    p = 10
    x, y = grid(p)
    A = torch.stack([torch.cos(math.pi * (x + y)), torch.cos(2 * math.pi * 3 * x / p)], 1)
    key, freq, frac = M.key_frequencies(A.double(), p)
    assert key == [3, 5] and freq.tolist() == [5, 3]
    torch.testing.assert_close(frac, torch.ones(2, dtype=torch.float64))


# -- restricted and excluded loss ----------------------------------------------------------------

@pytest.mark.parametrize("source,direction", [("x+y", (1, 1)), ("x-y", (1, -1)),
                                               ("2x+3y", (2, 3)), ("x+y+5", (1, 1)), ("x", (1, 0))])
def test_op_direction_of_linear_ops(source, direction):
    assert M.op_direction(parse_op(source)) == direction


@pytest.mark.parametrize("source", ["x*y", "x^2+y^2", "x/y", "x^2+y", "(x+y)/2y", "xy+x"])
def test_op_direction_is_none_for_nonlinear_ops(source):
    assert M.op_direction(parse_op(source)) is None


def algorithm_logits(p, a, b, freqs, scale=10.0):
    """Logits of the Fourier algorithm: scale * sum_k cos(w_k (a x + b y - z)), (p*p, p)."""
    x, y = grid(p)
    s = (a * x + b * y).double()[:, None] - torch.arange(p, dtype=torch.float64)[None, :]
    return scale * sum(torch.cos(2 * math.pi * k * s / p) for k in freqs)


def full_loss(logits, labels):
    return -logits.double().log_softmax(-1).gather(1, labels[:, None]).mean().item()


@pytest.mark.parametrize("source", ["x+y", "x-y", "2x+3y"])
def test_restricted_keeps_and_excluded_removes_the_algorithm(source):
    p, freqs = 31, [3, 7, 12]
    op = parse_op(source)
    a, b = M.op_direction(op)
    logits = algorithm_logits(p, a, b, freqs)
    labels = torch.from_numpy(op.labels(p)[2])
    train = torch.rand(p * p, generator=torch.Generator().manual_seed(0)) < 0.3
    full = full_loss(logits, labels)
    assert full < 0.05  # peaked: the construction solves the task
    assert M.restricted_loss(logits, labels, freqs, (a, b)) == pytest.approx(full, abs=1e-9)
    assert M.excluded_loss(logits, labels, train, freqs, (a, b)) == pytest.approx(math.log(p))
    # A per-class bias is the constant direction: restricted keeps it, excluded does not remove it.
    bias = torch.randn(p, dtype=torch.float64)
    assert M.restricted_loss(logits + bias, labels, freqs, (a, b)) == pytest.approx(
        full_loss(logits + bias, labels), abs=1e-9)
    bias_only = full_loss(bias.expand(int(train.sum()), p), labels[train])
    assert M.excluded_loss(logits + bias, labels, train, freqs, (a, b)) == pytest.approx(bias_only)


def test_directions_of_another_op_are_orthogonal_to_the_algorithm():
    p, freqs = 31, [3, 7, 12]
    logits = algorithm_logits(p, 1, -1, freqs)  # x - y
    labels = torch.from_numpy(parse_op("x-y").labels(p)[2])
    train = torch.ones(p * p, dtype=torch.bool)
    assert M.restricted_loss(logits, labels, freqs, (1, 1)) == pytest.approx(math.log(p))
    assert M.excluded_loss(logits, labels, train, freqs, (1, 1)) == pytest.approx(
        full_loss(logits, labels))
    # Only the key frequencies are kept: one wave of three cannot separate the answers.
    assert M.restricted_loss(logits, labels, freqs[:1], (1, -1)) > full_loss(logits, labels) + 0.5


def test_losses_skip_pairs_without_a_label():
    p = 7
    logits = algorithm_logits(p, 1, 1, [1, 2, 3])
    labels = (grid(p)[0] + grid(p)[1]) % p
    cut = labels.clone()
    cut[::p] = -1  # y = 0 has no answer, as for x/y
    train = cut >= 0
    want = full_loss(logits[train], labels[train])
    assert M.restricted_loss(logits, cut, [1, 2, 3], (1, 1)) == pytest.approx(want, abs=1e-9)
    assert M.excluded_loss(logits, cut, train, [1, 2, 3], (1, 1)) == pytest.approx(math.log(p))


def test_repeated_or_aliased_key_frequencies_do_not_break_the_basis():
    p = 12  # composite: 2k and 2(6-k) alias, and 2*6 = 0 mod 12 is the constant
    Q = M.key_directions(p, [1, 5, 6, 3, 3], (2, 2))
    torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[1], dtype=torch.float64))
    assert Q.shape[1] == 1 + 2 + 1  # const, cos/sin(2w(x+y)), and cos(6w(x+y)) alone (no sin)


# -- compute on a real model ---------------------------------------------------------------------

CHEAP = {"weight_sq_total", "gini_embed", "gini_wl", "ffs_embed", "ffs_wl", "fcr_embed", "fcr_wl"}
FULL = {"key_freqs", "n_key_freqs", "key_freq_neuron_frac", "neuron_freq", "neuron_freq_var_frac",
        "fourier_norms_embed", "fourier_norms_wl"}
LOSSES = {"restricted_loss", "excluded_loss"}


def tuned_model(p, k):
    """A real 1-layer model whose every MLP neuron is 5 + (cos w_k x + cos w_k y) / 3 (uniform
    attention, embedding cos(w_k t) on one axis, biased-positive ReLU), so k is a key frequency."""
    torch.manual_seed(0)
    d = 16
    model = Transformer(vocab=p + 1, n_out=p, d_model=d, n_heads=1, d_head=d, d_mlp=32)
    with torch.no_grad():
        for W in (model.W_Q, model.W_K, model.W_pos, model.W_E):
            W.zero_()
        model.W_E[:p, 0] = wave(p, k).float()
        model.W_V[0], model.W_O[0] = torch.eye(d), torch.eye(d)
        model.W_in.zero_()
        model.W_in[0] = 1.0
        model.b_in.fill_(5.0)
    return model


def run_compute(model, p, source, **kw):
    op = parse_op(source)
    x, y = grid(p)
    x_, y_, z = (torch.from_numpy(v) for v in op.labels(p))
    labels = torch.full((p * p,), -1, dtype=torch.long)
    labels[x_ * p + y_] = z
    train = (torch.rand(p * p, generator=torch.Generator().manual_seed(1)) < 0.5) & (labels >= 0)
    return M.compute(model, p, tokens_for(op, "nanda", p, x, y), labels, train, op, **kw)


def assert_plain_and_finite(out):
    for name, v in out.items():
        values = v if isinstance(v, list) else [v]
        assert all(type(u) in (int, float) and math.isfinite(u) for u in values), name


@pytest.mark.parametrize("source", ["x+y", "x*y", "x/y"])
def test_compute_on_a_random_model(source):
    p = 11
    torch.manual_seed(0)
    model = Transformer(vocab=p + 1, n_out=p, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    params = {f"weight_sq/{n}" for n, _ in model.named_parameters()}
    cheap = run_compute(model, p, source, full=False)
    assert set(cheap) == CHEAP | params
    assert cheap["weight_sq_total"] == pytest.approx(
        sum(w.detach().double().pow(2).sum().item() for w in model.parameters()))
    out = run_compute(model, p, source)
    has_losses = source == "x+y" and bool(out["key_freqs"])
    assert set(out) == CHEAP | params | FULL | (LOSSES if has_losses else set())
    assert len(out["fourier_norms_embed"]) == len(out["fourier_norms_wl"]) == p
    assert out["n_key_freqs"] == len(out["key_freqs"])
    assert_plain_and_finite(out)


@pytest.mark.parametrize("source", ["x+y", "x*y"])
def test_compute_losses_only_for_linear_ops(source):
    p, k = 11, 3
    out = run_compute(tuned_model(p, k), p, source)
    assert out["key_freqs"] == [k] and out["key_freq_neuron_frac"] == 1.0
    assert (LOSSES <= set(out)) == (source == "x+y")
    assert not (LOSSES & set(out)) or source == "x+y"
    assert_plain_and_finite(out)
