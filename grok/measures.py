"""Progress measures of the grokking papers (Nanda et al. 2023; Furuta et al. 2024), as pure functions.

Everything is computed in float64 from the model's weights and from one forward pass over the p*p
grid of inputs (x-major), so the training loop can call `compute` at eval points and log the flat
dict it returns. Op-dependent measures (restricted / excluded loss) are only defined for linear
ops; for others their keys are absent, so a logger records them as missing rather than zero.

Conventions: the Fourier basis of Z_p has rows const, cos1, sin1, cos2, sin2, ...; a "coefficient
matrix" is (p, n) with row i the coefficients of n vectors on basis row i. For odd p frequency k
(1 <= k <= (p-1)//2) lives in rows 2k-1 (cos) and 2k (sin); even p adds one unpaired row p-1
(cos_{p/2} = (-1)^t / sqrt(p), since sin_{p/2} is identically zero).
"""

import functools
import math

import torch
import torch.nn.functional as F

KEY_FREQ_THRESHOLD = 0.85  # fraction of a neuron's variance in one frequency (Nanda et al.)


# -- Fourier basis -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def fourier_basis(p: int) -> torch.Tensor:
    """Orthonormal real Fourier basis of Z_p as rows, float64 (p, p); cached: do not mutate.

    const 1/sqrt(p), then cos/sin(2 pi k t / p) scaled to unit norm for k = 1..(p-1)//2; for even
    p the Nyquist row (-1)^t / sqrt(p) comes last (its sin twin is zero, so it has no sin row).
    """
    if p < 2:
        raise ValueError(f"fourier_basis needs p >= 2, got {p}")
    t = torch.arange(p, dtype=torch.float64)
    rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        w = 2 * math.pi * k / p
        rows += [torch.cos(w * t) * math.sqrt(2 / p), torch.sin(w * t) * math.sqrt(2 / p)]
    if p % 2 == 0:
        rows.append((1 - 2 * (t % 2)) / math.sqrt(p))
    return torch.stack(rows)


def basis_labels(p: int) -> list[str]:
    """Names of the rows of fourier_basis(p): const, cos1, sin1, ..., (cos{p/2} for even p)."""
    labels = ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        labels += [f"cos{k}", f"sin{k}"]
    if p % 2 == 0:
        labels.append(f"cos{p // 2}")
    return labels


def _transform_2d(M: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Apply M (p, p) along the first two dims of A (p, p, ...) as two matmuls (no p^4 outer)."""
    p, shape = A.shape[0], A.shape
    A = (M @ A.reshape(p, -1)).reshape(shape).transpose(0, 1)
    return (M @ A.reshape(p, -1)).reshape(shape).transpose(0, 1)


def fourier_2d(A: torch.Tensor) -> torch.Tensor:
    """Coefficients of A (p, p, ...) in the product basis: out[i, j] = sum B[i,x] B[j,y] A[x,y]."""
    B = fourier_basis(A.shape[0]).to(A.device)
    return _transform_2d(B, A.double())


def inverse_fourier_2d(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of fourier_2d (the basis is orthonormal, so B^T)."""
    B = fourier_basis(coeffs.shape[0]).to(coeffs.device)
    return _transform_2d(B.T, coeffs.double())


# -- Op-independent measures -------------------------------------------------------------------

def weight_sq(model: torch.nn.Module) -> dict:
    """Sum of squared weights, in total and per parameter (what weight decay pushes down)."""
    out = {f"weight_sq/{name}": w.detach().double().pow(2).sum().item()
           for name, w in model.named_parameters()}
    return {"weight_sq_total": sum(out.values()), **out}


def fourier_coeffs(W: torch.Tensor) -> torch.Tensor:
    """Coefficient matrix B @ W of W (p, n), whose first axis is indexed by the p residues."""
    return fourier_basis(W.shape[0]).to(W.device) @ W.detach().double()


def fourier_norms(W: torch.Tensor) -> torch.Tensor:
    """Norm of b^T W for every basis row b, W (p, n): how much W uses each Fourier component."""
    return fourier_coeffs(W).norm(dim=1)


def embed_fourier(model, p: int) -> torch.Tensor:
    """Coefficients (p, d_model) of the embedding of the p number tokens (W_E[:p])."""
    return fourier_coeffs(model.W_E[:p])


def wl_fourier(model, p: int) -> torch.Tensor:
    """Coefficients (p, d_mlp) of W_L = W_out W_U along its output (logit) axis."""
    return fourier_coeffs(model.W_L().T)


def gini(x: torch.Tensor) -> float:
    """Gini coefficient of a non-negative vector: 0 uniform, (n-1)/n one-hot, 0 for all zeros."""
    x = x.double().flatten().sort().values
    n, total = x.numel(), x.sum()
    if total <= 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return (((2 * i - n - 1) * x).sum() / (n * total)).item()


def _cos_sin_norms(coeffs: torch.Tensor):
    """|mu_k|, |nu_k| for the K = (p-1)//2 paired frequencies. Even p drops its unpaired Nyquist
    cos row, so FFS and FCR average over the same frequencies as for odd p (p = 2 has none: the
    two measures are then nan, undefined rather than zero)."""
    K = (coeffs.shape[0] - 1) // 2
    norms = coeffs.double().norm(dim=1)
    return norms[1:2 * K + 1:2], norms[2:2 * K + 2:2]


def frequency_norms(coeffs: torch.Tensor) -> torch.Tensor:
    """Norm per frequency, (K+1,): the constant, then each frequency's cos and sin rows together
    (what a spectrum plot of the weights shows)."""
    mu, nu = _cos_sin_norms(coeffs)
    return torch.cat([coeffs[:1].double().norm(dim=1), (mu ** 2 + nu ** 2).sqrt()])


def ffs(coeffs: torch.Tensor, eta: float = 0.5) -> float:
    """Fourier Frequency Sparsity: the fraction of cos and sin components whose norm exceeds eta
    times the largest of their kind. Low = few dominant frequencies (addition)."""
    mu, nu = _cos_sin_norms(coeffs)
    if not len(mu):
        return math.nan
    count = sum(((v / v.max()) > eta).sum().item() for v in (mu, nu) if v.max() > 0)
    return count / (2 * len(mu))


def fcr(coeffs: torch.Tensor, rtol: float = 1e-9) -> float:
    """Fourier Coefficient Ratio: mean over frequencies of min(|mu|/|nu|, |nu|/|mu|). Low = cos-
    or sin-biased components (multiplication). A norm below rtol * the largest cos/sin norm is
    rounding noise and counts as zero, and a frequency with both norms zero scores 0, not 1: an
    absent frequency is not balanced, and 0/0 from noise would otherwise land anywhere in [0, 1]."""
    mu, nu = _cos_sin_norms(coeffs)
    if not len(mu):
        return math.nan
    floor = rtol * torch.cat([mu, nu]).max()
    lo, hi = torch.minimum(mu, nu), torch.maximum(mu, nu)
    return torch.where(lo > floor, lo / hi, 0.0).mean().item()


@functools.lru_cache(maxsize=16)
def _diagonals(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + y) mod p and (x - y) mod p over the grid, x-major."""
    x = torch.arange(p).repeat_interleave(p)
    y = torch.arange(p).repeat(p)
    return (x + y) % p, (x - y) % p


def key_frequencies(mlp_post_grid: torch.Tensor, p: int, threshold: float = KEY_FREQ_THRESHOLD):
    """Frequencies the MLP neurons are tuned to, from their activations over all p*p inputs.

    mlp_post_grid (p*p, d_mlp), x-major. Each centred neuron's variance is split over the 2D
    Fourier basis; its fraction for k is the energy in {const, cos_k, sin_k}^2 (for even p the
    Nyquist block is {const, cos_{p/2}}^2); its frequency is the argmax. Dead (constant) neurons
    get fraction 0. Returns (sorted key frequencies owning a neuron with fraction > threshold,
    per-neuron frequency (d_mlp,) long, per-neuron fraction (d_mlp,) float64).

    Computed without the O(p^3 d) 2D transform, exactly: the const row and column of the block
    are the 1D transforms of the neuron's sums over y and over x, and the {cos_k, sin_k}^2 square
    is spanned by the four orthogonal waves cos/sin(w_k(x+y)), cos/sin(w_k(x-y)) (each of squared
    norm p^2/2), so its energy is that of the sums along x+y = s and x-y = s at frequency k, / p.
    """
    B = fourier_basis(p).to(mlp_post_grid.device)
    A = mlp_post_grid.detach().to(torch.float64, copy=True)  # private copy: changed in place
    A -= A.mean(0)
    grid = A.view(p, p, -1)
    zeros = torch.zeros(p, A.shape[1], dtype=A.dtype, device=A.device)
    plus, minus = (zeros.clone().index_add_(0, s.to(A.device), A) for s in _diagonals(p))
    edge = (B @ grid.sum(0)).pow(2) / p + (B @ grid.sum(1)).pow(2) / p  # F[0, j]^2 + F[i, 0]^2
    square = ((B @ plus).pow(2) + (B @ minus).pow(2)) / p
    total = A.pow_(2).sum(0)                                 # Parseval: the neuron's energy
    K = (p - 1) // 2
    block = (edge + square)[1:2 * K + 1].view(K, 2, A.shape[1]).sum(1)
    if p % 2 == 0:  # cos_{p/2} x cos_{p/2} = (-1)^(x+y): one wave, seen once in the sums along x+y
        nyquist = edge[p - 1] + (B[p - 1] @ plus).pow(2) / p
        block = torch.cat([block, nyquist[None]])
    frac, idx = (block / total.clamp_min(1e-300)).max(0)
    frac = torch.where(total > 0, frac, 0.0)
    freq = idx + 1
    key = sorted(set(freq[frac > threshold].tolist()))
    return key, freq, frac


# -- Op-dependent measures: restricted and excluded loss --------------------------------------

def op_direction(op) -> tuple[int, int] | None:
    """(a, b) if op is a*x + b*y + c (no division, no cross terms, no powers), else None.

    Only for such ops is the algorithm of Nanda et al. (sums of key-frequency waves in a*x + b*y)
    known, so only for them are restricted / excluded loss defined.
    """
    if op.has_division:
        return None
    coef = {(i, j): c for c, i, j in op.numerator}
    if not set(coef) <= {(1, 0), (0, 1), (0, 0)}:
        return None
    return coef.get((1, 0), 0), coef.get((0, 1), 0)


def key_directions(p: int, key_freqs, direction) -> torch.Tensor:
    """Orthonormal (p*p, 1 + m) basis over the input grid: the constant, then cos and sin of
    w_k (a x + b y) for each key frequency k (w_k = 2 pi k / p).

    Why these span the right thing: cos(w(x+y)) = cos wx cos wy - sin wx sin wy and sin(w(x+y)) =
    sin wx cos wy + cos wx sin wy, so for x+y they are exactly the 2D-Fourier directions of
    Nanda et al.; for x-y the cross terms flip sign (cos(w(x-y)) = cos wx cos wy + sin wx sin wy);
    for a*x + b*y the frequencies on x and y are a*k and b*k mod p. A constant c only shifts the
    phase, rotating cos into sin within the same span, so it is ignored. Frequency pairs are
    reduced mod p and up to sign (cos even, sin odd): a pair that is 0 mod p is the constant, one
    equal to its own negative (even p) has no sin, and repeats are dropped. What is left are
    distinct characters of Z_p^2, so the columns are orthogonal and QR only normalises them.
    """
    a, b = direction
    x = torch.arange(p, dtype=torch.float64).repeat_interleave(p)
    y = torch.arange(p, dtype=torch.float64).repeat(p)
    cols, seen = [torch.ones(p * p, dtype=torch.float64)], set()
    for k in key_freqs:
        f = (a * k % p, b * k % p)
        neg = (-f[0] % p, -f[1] % p)
        if f == (0, 0) or min(f, neg) in seen:
            continue
        seen.add(min(f, neg))
        phase = 2 * math.pi * (f[0] * x + f[1] * y) / p
        cols.append(torch.cos(phase))
        if f != neg:
            cols.append(torch.sin(phase))
    Q, _ = torch.linalg.qr(torch.stack(cols, dim=1))
    return Q


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean float64 cross-entropy, skipping label -1 (pairs with no answer, e.g. y = 0 for x/y)."""
    return F.cross_entropy(logits.double(), labels, ignore_index=-1).item()


def restricted_loss(logits_grid, labels_grid, key_freqs, direction) -> float:
    """Loss when the logits (p*p, p) keep only the key-frequency directions over the input grid,
    plus the constant (Nanda's bias correction: the mean over inputs of what was removed).
    Near the train loss once the model runs the general (Fourier) algorithm."""
    Q = key_directions(logits_grid.shape[1], key_freqs, direction).to(logits_grid.device)
    L = logits_grid.double()
    return cross_entropy(Q @ (Q.T @ L), labels_grid)


def excluded_loss(logits_grid, labels, train_mask, key_freqs, direction) -> float:
    """Loss on the training pairs after removing exactly the key-frequency directions (not the
    constant). Rises above the train loss as the general algorithm takes over from memorisation."""
    Q = key_directions(logits_grid.shape[1], key_freqs, direction).to(logits_grid.device)[:, 1:]
    L = logits_grid.double()
    return cross_entropy(L[train_mask] - Q[train_mask] @ (Q.T @ L), labels[train_mask])


def skipped_fourier(model) -> dict:
    """{"fourier": why} for a model these measures cannot read: they need the one-layer model's
    neuron-to-logit map W_L and its `mlp_post` cache (grok/models/tables.py); else {}."""
    if hasattr(model, "W_L"):
        return {}
    return {"fourier": "the Fourier measures read the one-layer token-table model's W_E, W_L and "
                       "MLP activations (model.impl=auto or tables, 1 layer with an MLP)"}


# -- Everything at one eval point --------------------------------------------------------------

def compute(model, p: int, grid_tokens, grid_labels, train_mask, op, eta: float = 0.5,
            full: bool = True, fixed_keys=None) -> dict:
    """Flat dict of plain Python values for logging.

    Always (weights only, ~2 ms): weight_sq_total, weight_sq/<param>, gini_/ffs_/fcr_ of embed
    (W_E[:p]) and wl (W_L). With full=True (one forward pass over the p*p grid): key_freqs,
    n_key_freqs, key_freq_neuron_frac, neuron_freq and neuron_freq_var_frac (each neuron's
    frequency and the share of its variance that frequency explains), fourier_norms_embed,
    fourier_norms_wl, and restricted_loss and excluded_loss when the op is linear and there is a
    key frequency (else the keys are absent). `fixed_keys`, if given, replaces the current key
    frequencies in those two losses: Nanda et al. take them from the final model.
    grid_tokens (p*p, 3) x-major for every pair; grid_labels -1 where the op has no answer.
    """
    out = weight_sq(model)
    with torch.no_grad():
        coeffs = {"embed": embed_fourier(model, p), "wl": wl_fourier(model, p)}
    norms = {name: c.norm(dim=1) for name, c in coeffs.items()}
    for name, c in coeffs.items():
        out[f"gini_{name}"] = gini(norms[name])
        out[f"ffs_{name}"] = ffs(c, eta)
        out[f"fcr_{name}"] = fcr(c)
    if not full:
        return out

    cache = {}
    with torch.no_grad():
        logits = model(grid_tokens, cache=cache)
    key, freq, frac = key_frequencies(cache["mlp_post"], p)
    out.update(key_freqs=key, n_key_freqs=len(key),
               key_freq_neuron_frac=(frac > KEY_FREQ_THRESHOLD).double().mean().item(),
               neuron_freq=freq.tolist(), neuron_freq_var_frac=frac.tolist(),
               fourier_norms_embed=norms["embed"].tolist(), fourier_norms_wl=norms["wl"].tolist())
    direction = op_direction(op)
    key = list(fixed_keys) if fixed_keys else key
    if direction is not None and key:
        out["restricted_loss"] = restricted_loss(logits, grid_labels, key, direction)
        out["excluded_loss"] = excluded_loss(logits, grid_labels, train_mask, key, direction)
    return out
