"""A two-layer MLP on concatenated token embeddings (the MLP of Liu et al., "Towards Understanding
Grokking", as cited by Nanda): logits = W_out relu(W_in [E(t_0); ...; E(t_{T-1})] + b_in) + b_out.
It reads the whole sequence at once, so it answers tasks whose one target is at the last position.
"""

import math

import torch
from torch import nn

from grok.models.pack import PackModule


class MLP(PackModule):
    def __init__(self, vocab: int, n_out: int, n_ctx: int, d_model: int = 128, d_mlp: int = 512,
                 n_runs: int | None = None):
        super().__init__()
        self.dims = dict(vocab=vocab, n_out=n_out, n_ctx=n_ctx, d_model=d_model, d_mlp=d_mlp)
        self.n_runs = n_runs
        lead = () if n_runs is None else (n_runs,)

        def randn(*shape, scale):
            return nn.Parameter(torch.randn(*lead, *shape) / math.sqrt(scale))

        self.W_E = randn(vocab, d_model, scale=d_model)
        self.W_in = randn(n_ctx * d_model, d_mlp, scale=n_ctx * d_model)
        self.b_in = nn.Parameter(torch.zeros(*lead, d_mlp))
        self.W_out = randn(d_mlp, n_out, scale=d_mlp)
        self.b_out = nn.Parameter(torch.zeros(*lead, n_out))

    def forward(self, tokens: torch.Tensor, at=None, cache: dict | None = None,
                runs: slice | None = None) -> torch.Tensor:
        """Logits (R, B, 1, n_out) for tokens (R, B, T) (or (B, 1, n_out) for (B, T)); `at` must
        be the last position (the only one this model answers at)."""
        W = lambda w: self._lead(w, runs)  # noqa: E731
        x_tok = tokens if self.n_runs else tokens.unsqueeze(0)
        R, B, T = x_tok.shape
        W_E = W(self.W_E)
        V = W_E.shape[1]
        run = torch.arange(R, device=tokens.device).view(R, 1, 1)
        x = W_E.reshape(R * V, -1).index_select(0, (run * V + x_tok).reshape(-1)).view(R, B, -1)
        pre = torch.bmm(x, W(self.W_in)) + W(self.b_in).unsqueeze(1)
        post = torch.relu(pre)
        logits = (torch.bmm(post, W(self.W_out)) + W(self.b_out).unsqueeze(1)).unsqueeze(2)
        if cache is not None:
            acts = {"hook_embed": x, "mlp.hook_pre": pre, "mlp.hook_post": post}
            cache.update(acts if self.n_runs else {k: v[0] for k, v in acts.items()})
        return logits if self.n_runs else logits[0]
