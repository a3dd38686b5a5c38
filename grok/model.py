"""A one-layer transformer for modular arithmetic that computes only what the final position needs.

Weights use TransformerLens' (in, out) convention, so a researcher's W_E @ W_Q means what it says:
W_E (vocab, d), W_pos (n_ctx, d), W_Q/W_K/W_V (heads, d, d_head), W_O (heads, d_head, d),
W_in (d, d_mlp), W_out (d_mlp, d), W_U (d, p). Attention is causal with no LayerNorm.

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


class Transformer(nn.Module):
    def __init__(self, vocab: int, n_out: int, n_ctx: int = 3, d_model: int = 128, n_heads: int = 4,
                 d_head: int = 32, d_mlp: int = 512, pos_embed: bool = True, mlp_bias: bool = True,
                 impl: str = "tables"):
        super().__init__()
        if impl not in ("tables", "full"):
            raise ValueError(f"unknown model impl {impl!r} (tables or full)")
        self.impl, self.n_ctx, self.d_head = impl, n_ctx, d_head
        d, h = d_model, n_heads
        # Initialisation as Nanda et al.'s reference code, so runs are comparable with theirs.
        self.W_E = nn.Parameter(torch.randn(vocab, d) / math.sqrt(d))
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d) / math.sqrt(d)) if pos_embed else None
        self.W_Q = nn.Parameter(torch.randn(h, d, d_head) / math.sqrt(d))
        self.W_K = nn.Parameter(torch.randn(h, d, d_head) / math.sqrt(d))
        self.W_V = nn.Parameter(torch.randn(h, d, d_head) / math.sqrt(d))
        self.W_O = nn.Parameter(torch.randn(h, d_head, d) / math.sqrt(d))
        self.W_in = nn.Parameter(torch.randn(d, d_mlp) / math.sqrt(d))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d) / math.sqrt(d))
        self.b_in = nn.Parameter(torch.zeros(d_mlp)) if mlp_bias else None
        self.b_out = nn.Parameter(torch.zeros(d)) if mlp_bias else None
        self.W_U = nn.Parameter(torch.randn(d, n_out) / math.sqrt(n_out))

    def forward(self, tokens: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """Logits (batch, p) at the last position. `cache`, if given, receives the activations
        the progress measures read: attention pattern, MLP pre/post activations, final residual."""
        if self.impl == "full":
            resid, attn = self._attend_full(tokens)
        else:
            resid, attn = self._attend_tables(tokens)
        resid, pre, post = self._mlp(resid)
        logits = resid @ self.W_U
        if self.impl == "full":  # unembedded every position, as usual; only the last is read
            logits = logits[:, -1]
            attn, pre, post, resid = attn[:, :, -1], pre[:, -1], post[:, -1], resid[:, -1]
        if cache is not None:
            cache.update(attn=attn, mlp_pre=pre, mlp_post=post, resid_final=resid)
        return logits

    def _mlp(self, resid):
        pre = resid @ self.W_in
        if self.b_in is not None:
            pre = pre + self.b_in
        post = F.relu(pre)
        out = post @ self.W_out
        if self.b_out is not None:
            out = out + self.b_out
        return resid + out, pre, post

    def _attend_tables(self, tokens):
        """Residual after attention at the last position, from per-(position, token) tables."""
        B, n = tokens.shape
        V, d = self.W_E.shape
        h, e = self.W_Q.shape[0], self.d_head
        if self.W_pos is None:  # every position shares one table: compute it once
            R = self.W_E.unsqueeze(0)
            pos = torch.zeros(n, dtype=torch.long, device=tokens.device)
        else:
            R = self.W_E.unsqueeze(0) + self.W_pos[:n].unsqueeze(1)  # (n, V, d)
            pos = torch.arange(n, device=tokens.device)
        P = R.shape[0]
        r_last = R[-1]                                            # (V, d)
        q = torch.einsum("vd,hde->hve", r_last, self.W_Q)          # (h, V, e)
        k = torch.einsum("pvd,hde->hpve", R, self.W_K)             # (h, P, V, e)
        v = torch.einsum("pvd,hde->pvhe", R, self.W_V)             # (P, V, h, e)
        # Score of query token a against key token b at table position i: (P, V_a, V_b, h).
        scores = torch.einsum("hae,hpbe->pabh", q, k) / math.sqrt(e)
        t_last = tokens[:, -1]
        # Flat indices into the tables; index_select has a far cheaper backward than T[idx].
        idx = (pos.unsqueeze(0) * V + t_last.unsqueeze(1)) * V + tokens  # (B, n) into (P*V*V)
        s = scores.reshape(P * V * V, h).index_select(0, idx.reshape(-1)).view(B, n, h)
        attn = s.softmax(dim=1)                                    # causal: last sees all n
        vals = v.reshape(P * V, h * e).index_select(0, (pos * V + tokens).reshape(-1))
        # (an elementwise sum over 3 positions: as a bmm it would be B*h tiny 1x3 products)
        z = (attn.unsqueeze(-1) * vals.view(B, n, h, e)).sum(dim=1)
        attn_out = z.reshape(B, h * e) @ self.W_O.reshape(h * e, d)
        resid = r_last.index_select(0, t_last) + attn_out
        return resid, attn.transpose(1, 2)                         # attn as (B, h, n) at last query

    def _attend_full(self, tokens):
        """Every position through attention (and, in forward, the MLP and unembed), as usual."""
        B, n = tokens.shape
        x = self.W_E[tokens]
        if self.W_pos is not None:
            x = x + self.W_pos[:n]
        q = torch.einsum("bnd,hde->bhne", x, self.W_Q)
        k = torch.einsum("bnd,hde->bhne", x, self.W_K)
        v = torch.einsum("bnd,hde->bhne", x, self.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        mask = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        attn = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
        x = x + torch.einsum("bhne,hed->bnd", attn @ v, self.W_O)
        return x, attn

    def W_L(self) -> torch.Tensor:
        """Neuron-to-logit map W_out W_U (d_mlp, p): the unembedding seen from the MLP neurons."""
        return self.W_out @ self.W_U


def build_model(cfg_model, vocab: int, n_out: int, n_ctx: int = 3) -> Transformer:
    return Transformer(vocab=vocab, n_out=n_out, n_ctx=n_ctx, d_model=cfg_model.d_model,
                       n_heads=cfg_model.n_heads, d_head=cfg_model.d_head, d_mlp=cfg_model.d_mlp,
                       pos_embed=cfg_model.pos_embed, mlp_bias=cfg_model.mlp_bias,
                       impl=cfg_model.impl)
