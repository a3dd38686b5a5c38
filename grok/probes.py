"""Progress measures of attention circuits (seed 000's phase changes), read from the cache of a
single run's HookedTransformer on a fixed probe batch.

- Induction and previous-token scores (Olsson et al.'s definitions, as TransformerLens users
  compute them): on random tokens repeated twice, `r_0..r_{h-1} r_0..r_{h-1}`, a head's induction
  score is its mean attention from each second-half position q to q-h+1 (the token after the
  earlier copy of the current token); its previous-token score is the mean attention from q to
  q-1. Logged per head as `induction_score/L{l}H{h}`, `prev_token_score/L{l}H{h}`, with the loss
  on each half (`probe_loss_first_half`, `probe_loss_repeat_half`): an induction circuit makes the
  repeated half predictable while the first half stays at chance.
- Attention to the max: the mean attention from END to the position of the largest entry, per
  head (`attn_to_max/H{h}`), and the loss per true maximum (`loss_by_max/{v}`): one skip trigram
  `v .. END v` per value, each with its own phase change.

Every model that can train a task gets its measures: the general model's attention comes from
its hook points, the one-layer token-table model's from its own cache (the pattern from the last
query, all that the max needs), and a model without attention (the MLP) gets the measures that
read logits only; `skipped` names the rest and says why, for the run's summary.
"""

import torch
import torch.nn.functional as F

from grok.measures import weight_sq  # noqa: F401 - re-exported: every task logs weight norms

NO_HOOKS = "needs attention patterns at every query position (the general model's hook points)"
NO_ATTENTION = "the model has no attention"


def hooked(model) -> bool:
    """The general model (grok/models/hooked.py): every activation at every position."""
    return hasattr(model, "run_with_cache")


def end_attention(model, tokens: torch.Tensor):
    """(logits at the last position (B, n_out), attention of block 0 from the last position
    (B, H, T), or None for a model without attention), for any model of grok.models."""
    if hooked(model):
        logits, cache = model.run_with_cache(tokens)
        return logits[:, -1], cache["blocks.0.attn.hook_pattern"][:, :, -1]
    cache = {}
    logits = model(tokens, cache=cache)        # (B, n_out) tables, (B, 1, n_out) MLP
    return logits.reshape(len(tokens), -1), cache.get("attn")  # tables: (B, H, T) from the last query


def skipped(model, measure: str) -> dict:
    """{measure: why} where `measure` (induction or attn_to_max) does not apply to `model`."""
    if measure == "induction" and not hooked(model):
        return {measure: NO_HOOKS}
    if measure == "attn_to_max" and not (hooked(model) or hasattr(model, "W_Q")):
        return {measure: NO_ATTENTION}
    return {}


@torch.no_grad()
def induction(model, tokens: torch.Tensor) -> dict:
    """tokens (B, 2h): each row a random half repeated. Empty for a model without hook points
    (`skipped`): no task such a model trains needs it."""
    if not hooked(model):
        return {}
    logits, cache = model.run_with_cache(tokens)
    h = tokens.shape[1] // 2
    out = {}
    for layer in range(len(model.blocks)):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double()              # (B, H, T, T)
        ind = pattern.diagonal(offset=-(h - 1), dim1=-2, dim2=-1)[..., 1:]     # q = h..2h-1
        prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)                   # q = 1..T-1
        for H, (i, p) in enumerate(zip(ind.mean((0, 2)).tolist(), prev.mean((0, 2)).tolist())):
            out[f"induction_score/L{layer}H{H}"] = i
            out[f"prev_token_score/L{layer}H{H}"] = p
    out["induction_score_max"] = max(v for k, v in out.items() if k.startswith("induction"))
    out["prev_token_score_max"] = max(v for k, v in out.items() if k.startswith("prev_token"))
    ce = F.cross_entropy(logits[:, :-1].double().transpose(1, 2), tokens[:, 1:], reduction="none")
    out["probe_loss_first_half"] = ce[:, :h - 1].mean().item()   # predicting r_1 .. r_{h-1}
    out["probe_loss_repeat_half"] = ce[:, h:].mean().item()      # predicting them again
    return out


@torch.no_grad()
def attention_to_max(model, tokens: torch.Tensor) -> dict:
    """tokens (B, n+2): START x_1..x_n END, one largest x. A model without attention gets the
    loss per maximum only."""
    logits, pattern = end_attention(model, tokens)
    x = tokens[:, 1:-1]
    out = {}
    if pattern is not None:
        where = (x.argmax(1) + 1).view(-1, 1, 1)                       # position of the max
        to_max = pattern.double().gather(2, where.expand(-1, pattern.shape[1], 1))[..., 0]
        out = {f"attn_to_max/H{H}": v for H, v in enumerate(to_max.mean(0).tolist())}
        out["attn_to_max"] = max(out.values())
    top = x.max(1).values
    ce = F.cross_entropy(logits.double(), top, reduction="none")
    for v in top.unique().tolist():
        out[f"loss_by_max/{v}"] = ce[top == v].mean().item()
    return out
