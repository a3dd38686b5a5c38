"""The one-layer transformer of the grokking papers, with a token-table fast path; one run or a pack.

Weights use TransformerLens' (in, out) convention, so a researcher's W_E @ W_Q means what it says:
W_E (vocab, d), W_pos (n_ctx, d), W_Q/W_K/W_V (heads, d, d_head), W_O (heads, d_head, d),
W_in (d, d_mlp), W_out (d_mlp, d), W_U (d, p). Attention is causal with no LayerNorm.

Packs: `Transformer(..., n_runs=R)` (or `Transformer.stack(models)`) gives every parameter a
leading run axis and takes tokens (R, N, T) to logits (R, N, p): R independent runs in one set of
batched matmuls. Nothing mixes runs, so each run's logits and gradients are those it would have
alone. A single model (n_runs=None) is computed as a pack of one: there is one forward.

Why two implementations: in one layer whose logits are read at the last position, every residual
before attention is W_E[token] + W_pos[position], so queries, keys, values and attention scores
are functions of (position, token) and can be computed once per step on the vocabulary ("token
tables") and looked up per example. `impl="full"` is the textbook every-position computation of the
same function, kept as the reference the tests and the benchmark compare against.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from grok.models.pack import PackModule

PARAMS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "b_in", "W_out", "b_out", "W_U")


class Transformer(PackModule):
    def __init__(self, vocab: int, n_out: int, n_ctx: int = 3, d_model: int = 128, n_heads: int = 4,
                 d_head: int = 32, d_mlp: int = 512, pos_embed: bool = True, mlp_bias: bool = True,
                 impl: str = "tables", n_runs: int | None = None):
        super().__init__()
        if impl not in ("tables", "full"):
            raise ValueError(f"unknown model impl {impl!r} (tables or full)")
        self.impl, self.n_ctx, self.d_head, self.n_runs = impl, n_ctx, d_head, n_runs
        self.dims = dict(vocab=vocab, n_out=n_out, n_ctx=n_ctx, d_model=d_model, n_heads=n_heads,
                         d_head=d_head, d_mlp=d_mlp, pos_embed=pos_embed, mlp_bias=mlp_bias,
                         impl=impl)
        d, h = d_model, n_heads
        lead = () if n_runs is None else (n_runs,)

        def randn(*shape, scale):
            return nn.Parameter(torch.randn(*lead, *shape) / math.sqrt(scale))

        # Initialisation as Nanda et al.'s reference code, so runs are comparable with theirs.
        self.W_E = randn(vocab, d, scale=d)
        self.W_pos = randn(n_ctx, d, scale=d) if pos_embed else None
        self.W_Q = randn(h, d, d_head, scale=d)
        self.W_K = randn(h, d, d_head, scale=d)
        self.W_V = randn(h, d, d_head, scale=d)
        self.W_O = randn(h, d_head, d, scale=d)
        self.W_in = randn(d, d_mlp, scale=d)
        self.W_out = randn(d_mlp, d, scale=d)
        self.b_in = nn.Parameter(torch.zeros(*lead, d_mlp)) if mlp_bias else None
        self.b_out = nn.Parameter(torch.zeros(*lead, d)) if mlp_bias else None
        self.W_U = randn(d, n_out, scale=n_out)

    # -- forward ----------------------------------------------------------------------------

    def _weights(self, runs: slice | None = None) -> dict:
        """Every parameter with a leading run axis (a single model is a pack of one); `runs`
        picks a part of a pack (its gradients flow back into the pack's parameters)."""
        return {n: self._lead(getattr(self, n), runs) for n in PARAMS}

    def forward(self, tokens: torch.Tensor, cache: dict | None = None,
                runs: slice | None = None) -> torch.Tensor:
        """Logits at the last position: (N, p) for tokens (N, T), or (R, N, p) for a pack's
        tokens (R, N, T) (or for the runs `runs` of the pack only). `cache`, if given, receives
        the activations the progress measures read: attention pattern, MLP pre/post
        activations, final residual."""
        w = self._weights(runs)
        x = tokens if self.n_runs else tokens.unsqueeze(0)
        if self.impl == "full":
            resid, attn = self._attend_full(w, x)
        else:
            resid, attn = self._attend_tables(w, x)
        resid, pre, post = self._mlp(w, resid)
        W_U = w["W_U"]
        logits = torch.bmm(resid, W_U) if resid.dim() == 3 else resid @ W_U.unsqueeze(1)
        if self.impl == "full":  # unembedded every position, as usual; only the last is read
            logits = logits[:, :, -1]
            attn, pre, post, resid = attn[:, :, :, -1], pre[:, :, -1], post[:, :, -1], resid[:, :, -1]
        if cache is not None:
            acts = dict(attn=attn, mlp_pre=pre, mlp_post=post, resid_final=resid)
            cache.update(acts if self.n_runs else {k: v[0] for k, v in acts.items()})
        return logits if self.n_runs else logits[0]

    def logits_at(self, tokens, at, runs=None):
        """This model answers at the last position only (the token tables assume it)."""
        assert list(at) == [self.n_ctx - 1], f"one-layer tables model reads the last position, not {at}"
        return self(tokens, runs=runs).unsqueeze(-2)

    @staticmethod
    def _mlp(w, resid):
        """resid (R, B, d) or, every-position, (R, B, n, d)."""
        extra = (1,) * (resid.dim() - 3)  # the position axis of the every-position impl

        def lin(x, W, b):
            y = torch.bmm(x, W) if x.dim() == 3 else x @ W.view(W.shape[0], *extra, *W.shape[1:])
            return y if b is None else y + b.view(b.shape[0], 1, *extra, b.shape[-1])

        pre = lin(resid, w["W_in"], w["b_in"])
        post = F.relu(pre)
        return resid + lin(post, w["W_out"], w["b_out"]), pre, post

    def _attend_tables(self, w, tokens):
        """Residual after attention at the last position, from per-(position, token) tables."""
        R, B, n = tokens.shape
        _, V, d = w["W_E"].shape
        h, e = w["W_Q"].shape[1], self.d_head
        dev = tokens.device
        if w["W_pos"] is None:  # every position shares one table: compute it once
            T = w["W_E"].unsqueeze(1)                              # (R, 1, V, d)
            pos = torch.zeros(n, dtype=torch.long, device=dev)
        else:
            T = w["W_E"].unsqueeze(1) + w["W_pos"][:, :n].unsqueeze(2)  # (R, n, V, d)
            pos = torch.arange(n, device=dev)
        P = T.shape[1]
        r_last = T[:, -1]                                          # (R, V, d)
        # Plain matmuls broadcast over (run, head[, position]), not einsum: einsum picks its
        # contraction order from the shapes (a pack of one takes another path than a pack of two),
        # which would make a run's rounding depend on its pack.
        q = r_last.unsqueeze(1) @ w["W_Q"]                         # (R, h, V, e)
        k = T.unsqueeze(1) @ w["W_K"].unsqueeze(2)                 # (R, h, P, V, e)
        v = (T.unsqueeze(1) @ w["W_V"].unsqueeze(2)).permute(0, 2, 3, 1, 4)  # (R, P, V, h, e)
        # Score of query token a against key token b at table position i: (R, P, V_a, V_b, h).
        scores = (q.unsqueeze(2) @ k.transpose(-1, -2)).permute(0, 2, 3, 4, 1) / math.sqrt(e)
        t_last = tokens[:, :, -1]
        run = torch.arange(R, device=dev).view(R, 1, 1)
        # Flat indices into the tables; index_select has a far cheaper backward than T[idx].
        cell = (run * P + pos) * V                                 # (R, 1, n)
        idx = (cell + t_last.unsqueeze(-1)) * V + tokens           # (R, B, n) into (R*P*V*V)
        s = scores.reshape(R * P * V * V, h).index_select(0, idx.reshape(-1)).view(R, B, n, h)
        attn = s.softmax(dim=2)                                    # causal: last sees all n
        vals = v.reshape(R * P * V, h * e).index_select(0, (cell + tokens).reshape(-1))
        # (an elementwise sum over 3 positions: as a bmm it would be B*h tiny 1x3 products)
        z = (attn.unsqueeze(-1) * vals.view(R, B, n, h, e)).sum(dim=2)
        attn_out = torch.bmm(z.reshape(R, B, h * e), w["W_O"].reshape(R, h * e, d))
        last = (run.view(R, 1) * V + t_last).reshape(-1)
        resid = r_last.reshape(R * V, d).index_select(0, last).view(R, B, d) + attn_out
        return resid, attn.transpose(2, 3)                         # attn (R, B, h, n) at last query

    def _attend_full(self, w, tokens):
        """Every position through attention (and, in forward, the MLP and unembed), as usual."""
        R, B, n = tokens.shape
        run = torch.arange(R, device=tokens.device).view(R, 1, 1)
        x = w["W_E"][run, tokens]                                  # (R, B, n, d)
        if w["W_pos"] is not None:
            x = x + w["W_pos"][:, :n].unsqueeze(1)
        xh = x.unsqueeze(2)                                        # (R, B, 1, n, d)
        q, k, v = (xh @ w[name].unsqueeze(1) for name in ("W_Q", "W_K", "W_V"))  # (R, B, h, n, e)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        mask = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        attn = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
        x = x + ((attn @ v) @ w["W_O"].unsqueeze(1)).sum(dim=2)    # heads summed
        return x, attn

    def W_L(self) -> torch.Tensor:
        """Neuron-to-logit map W_out W_U (d_mlp, p), or (R, d_mlp, p) for a pack."""
        return self.W_out @ self.W_U
