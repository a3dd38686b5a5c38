"""The loss and accuracy maths: token losses a run can train on (`loss=` config group; none
chosen: cross-entropy), their mean, and accuracies.

A token loss a config may name (`loss.fn._target_`) is a function registered here
(`@register("loss")`, grok.targets); `token_loss(cfg)` looks the name up, never imports it.

Each token loss maps logits (..., C) and labels (...) with -1 for "no loss here" to a float64
loss per token (0 where the label is -1), the shape of the labels; `mean_ce` averages them.
"""

import functools

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from grok.config import ConfigError
from grok.targets import register, resolve


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with the log-softmax in float64: in float32 the loss of a well-fit point
    floors near 1e-7, its gradient rounds to zero and Adam turns that into loss spikes.
    logits (..., N, C), labels (..., N) with -1 for "no loss here"; one mean per leading index."""
    return mean_ce(token_ce(logits, labels), labels)


def mean_ce(ce: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean of token cross-entropies `ce` (..., N) over the labelled ones, per leading index."""
    return ce.sum(-1) / (labels >= 0).sum(-1)


def own_sums(x: torch.Tensor, lengths: list[int], dim: int = -1) -> torch.Tensor:
    """Each run's sum of x (R, ...) along `dim` over its own first lengths[r] entries, reduced as
    a tensor of that length alone is: how long a pack pads a run's examples (its zeros) then never
    changes the rounding of the run's recorded loss. Runs of one length are summed together."""
    L = x.shape[dim]
    if all(n == L for n in lengths):
        return x.sum(dim)
    groups: dict[int, list[int]] = {}
    for r, n in enumerate(lengths):
        groups.setdefault(n, []).append(r)
    order, parts = [], []
    for n, runs in groups.items():
        rows = x.index_select(0, torch.tensor(runs, device=x.device))
        parts.append(rows.narrow(dim, 0, n).contiguous().sum(dim))
        order += runs
    back = torch.argsort(torch.tensor(order, device=x.device))
    return torch.cat(parts).index_select(0, back)


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every labelled token in float64 (0 where the label is -1), labels' shape."""
    C = logits.shape[-1]
    return F.cross_entropy(logits.double().reshape(-1, C), labels.reshape(-1), ignore_index=-1,
                           reduction="none").view(labels.shape)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of sequences with every target right, per leading index (float64); sequences
    without targets (padding) do not count. logits (..., N, K, C), labels (..., N, K)."""
    has = labels >= 0
    right = ((logits.argmax(-1) == labels) | ~has).all(-1) & has.any(-1)
    return right.sum(-1) / has.any(-1).sum(-1).double()


def per_position(logits: torch.Tensor, labels: torch.Tensor, ce: torch.Tensor | None = None,
                 counts: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and accuracy at each answer position (..., K), over the examples that have a target
    there (float64); nan where none has. `ce`: token_ce(logits, labels), if already computed;
    `counts`: each run's own example count (R, ...) (padding after it), see `own_sums`."""
    has = labels >= 0
    ce = token_ce(logits, labels) if ce is None else ce
    n = has.sum(-2).double()
    right = (logits.argmax(-1) == labels) & has
    total = ce.sum(-2) if counts is None else own_sums(ce, counts, dim=-2)
    return total / n, right.sum(-2) / n


@register("loss")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy in float64 (token_ce)."""
    return token_ce(logits, labels)


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """Prieto et al. 2025's s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0. Positive, increasing,
    and only linear (not exponential) in x, so the probabilities s(x_i) / sum_j s(x_j) do not
    round to exactly 1 and 0 as the logits grow (no softmax collapse). Each branch sees only its
    own side of 0, so neither makes an inf (or a nan gradient) where it is not used."""
    return torch.where(x >= 0, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))


@register("loss")
def stablemax_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """StableMax cross-entropy, float64: -log(s(x_label) / sum_j s(x_j)) per labelled token."""
    s = stablemax(logits.double())
    has = labels >= 0
    picked = s.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ce = s.sum(-1).log() - picked.log()
    return torch.where(has, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))


def token_loss(cfg):
    """The token loss of the `loss` group (conf/loss/): the registered function `loss.fn._target_`
    names, bound to any further keys of `loss.fn`; softmax cross-entropy if no loss is chosen."""
    loss = cfg.get("loss")
    if not loss:
        return token_ce
    fn = loss.get("fn")
    if not OmegaConf.is_dict(fn) and not isinstance(fn, dict):
        raise ConfigError(f"loss.fn={fn!r}: must name a token loss (e.g. loss=stablemax)")
    f = resolve("loss", fn.get("_target_"), "loss.fn._target_")
    extra = {str(k): v for k, v in fn.items() if k not in ("_target_", "_partial_")}
    hydra = [k for k in extra if k.startswith("_")]  # _args_, _recursive_, ...: nothing here reads them
    if hydra:
        raise ConfigError(f"loss.fn.{hydra[0]}: not a key of a token loss (loss.fn holds _target_ "
                          f"and the loss's own arguments)")
    extra = {k: OmegaConf.to_object(v) if OmegaConf.is_config(v) else v for k, v in extra.items()}
    return functools.partial(f, **extra) if extra else f
