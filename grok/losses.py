"""Token losses a run can train on (`loss=` config group; none chosen: cross-entropy).

Each maps logits (..., C) and labels (...) with -1 for "no loss here" to a float64 loss per
token (0 where the label is -1), the shape of the labels; grok.runs.mean_ce averages them.
"""

import torch

from grok.runs import token_ce


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy in float64 (grok.runs.token_ce)."""
    return token_ce(logits, labels)


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """Prieto et al. 2025's s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0. Positive, increasing,
    and only linear (not exponential) in x, so the probabilities s(x_i) / sum_j s(x_j) do not
    round to exactly 1 and 0 as the logits grow (no softmax collapse). Each branch sees only its
    own side of 0, so neither makes an inf (or a nan gradient) where it is not used."""
    return torch.where(x >= 0, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))


def stablemax_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """StableMax cross-entropy, float64: -log(s(x_label) / sum_j s(x_j)) per labelled token."""
    s = stablemax(logits.double())
    has = labels >= 0
    picked = s.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ce = s.sum(-1).log() - picked.log()
    return torch.where(has, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))
