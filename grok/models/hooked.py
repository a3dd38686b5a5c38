"""A general decoder-only transformer for packs, with TransformerLens names and hook points.

Parameters and activations are named as in TransformerLens (`embed.W_E`, `blocks.0.attn.W_Q`,
`blocks.1.attn.hook_pattern`, `blocks.0.mlp.hook_post`, ...), in its (in, out) weight convention,
so a researcher's habits carry over: `model.run_with_cache(tokens)` returns logits and a dict of
every activation; `model(tokens, hooks={name: fn})` replaces activation `name` by `fn(act)`
(patching). Options: `n_layers`, `attn_only`, learned positions or none, LayerNorm or none, MLP
biases, ReLU or GELU. Attention and unembedding have no biases, as in Nanda et al.'s model.

Packs: every parameter has a leading run axis when `n_runs` is set, and tokens are (R, B, T); a
single model takes (B, T) and is computed as a pack of one. Nothing mixes runs.

The readout: training asks for logits at the positions that carry targets only (`at`). Earlier
layers need every position (their keys and values), but the last block's queries, MLP and
unembedding are computed at those positions only: the same numbers as the every-position
computation (each position's output depends only on itself and the keys before it), a fraction of
the work when the answer is one token. `at=None` computes every position.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from grok.models.pack import PackModule

LN_EPS = 1e-5  # TransformerLens' default


def _param(lead, *shape, scale=None, fill=None):
    if fill is not None:
        return nn.Parameter(torch.full((*lead, *shape), float(fill)))
    return nn.Parameter(torch.randn(*lead, *shape) / math.sqrt(scale))


class _LN(nn.Module):
    def __init__(self, lead, d):
        super().__init__()
        self.w, self.b = _param(lead, d, fill=1), _param(lead, d, fill=0)


class _Attn(nn.Module):
    def __init__(self, lead, d, h, e):
        super().__init__()
        self.W_Q, self.W_K, self.W_V = (_param(lead, h, d, e, scale=d) for _ in range(3))
        self.W_O = _param(lead, h, e, d, scale=d)


class _MLP(nn.Module):
    def __init__(self, lead, d, m, bias):
        super().__init__()
        self.W_in, self.W_out = _param(lead, d, m, scale=d), _param(lead, m, d, scale=d)
        self.b_in = _param(lead, m, fill=0) if bias else None
        self.b_out = _param(lead, d, fill=0) if bias else None


class _Block(nn.Module):
    def __init__(self, lead, d, h, e, m, attn_only, ln, bias):
        super().__init__()
        self.ln1 = _LN(lead, d) if ln else None
        self.attn = _Attn(lead, d, h, e)
        self.ln2 = _LN(lead, d) if ln and not attn_only else None
        self.mlp = None if attn_only else _MLP(lead, d, m, bias)


class _Embed(nn.Module):
    def __init__(self, lead, V, d):
        super().__init__()
        self.W_E = _param(lead, V, d, scale=d)


class _PosEmbed(nn.Module):
    def __init__(self, lead, n_ctx, d):
        super().__init__()
        self.W_pos = _param(lead, n_ctx, d, scale=d)


class _Unembed(nn.Module):
    def __init__(self, lead, d, n_out):
        super().__init__()
        self.W_U = _param(lead, d, n_out, scale=n_out)


class HookedTransformer(PackModule):
    def __init__(self, vocab: int, n_out: int, n_ctx: int, d_model: int = 128, n_heads: int = 4,
                 d_head: int = 32, d_mlp: int = 512, n_layers: int = 1, attn_only: bool = False,
                 pos_embed: bool = True, normalization: str | None = None, mlp_bias: bool = True,
                 act: str = "relu", n_runs: int | None = None):
        super().__init__()
        if normalization not in (None, "LN"):
            raise ValueError(f"normalization={normalization!r}: null or LN")
        if act not in ("relu", "gelu"):
            raise ValueError(f"act={act!r}: relu or gelu")
        self.dims = dict(vocab=vocab, n_out=n_out, n_ctx=n_ctx, d_model=d_model, n_heads=n_heads,
                         d_head=d_head, d_mlp=d_mlp, n_layers=n_layers, attn_only=attn_only,
                         pos_embed=pos_embed, normalization=normalization, mlp_bias=mlp_bias, act=act)
        self.n_runs, self.d_head, self.act = n_runs, d_head, act
        lead = () if n_runs is None else (n_runs,)
        ln = normalization == "LN"
        # Initialisation as the one-layer model (Nanda et al.): N(0, 1/d) weights, zero biases.
        self.embed = _Embed(lead, vocab, d_model)
        self.pos_embed = _PosEmbed(lead, n_ctx, d_model) if pos_embed else None
        self.blocks = nn.ModuleList(_Block(lead, d_model, n_heads, d_head, d_mlp, attn_only, ln, mlp_bias)
                                    for _ in range(n_layers))
        self.ln_final = _LN(lead, d_model) if ln else None
        self.unembed = _Unembed(lead, d_model, n_out)

    # -- forward ----------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, at=None, cache: dict | None = None, hooks: dict | None = None,
                runs: slice | None = None) -> torch.Tensor:
        """Logits (R, B, K, n_out) at positions `at` (K of them; None: every position), or
        (B, K, n_out) for a single model's tokens (B, T). `cache` receives every hook point's
        activation (batch first, as TransformerLens; a pack's have the run axis in front);
        `hooks` maps hook names to functions that replace the activation."""
        W = lambda w: self._lead(w, runs)  # noqa: E731
        x_tok = tokens if self.n_runs else tokens.unsqueeze(0)
        R, B, T = x_tok.shape
        hook = _Hooks(cache, hooks, single=not self.n_runs)
        W_E = W(self.embed.W_E)
        V = W_E.shape[1]
        run = torch.arange(R, device=tokens.device).view(R, 1, 1)
        # index_select on the flattened table: a far cheaper backward than W_E[run, tokens]
        x = W_E.reshape(R * V, -1).index_select(0, (run * V + x_tok).reshape(-1)).view(R, B, T, -1)
        x = hook("hook_embed", x)
        if self.pos_embed is not None:
            pos = hook("hook_pos_embed", W(self.pos_embed.W_pos)[:, :T].unsqueeze(1).expand(R, B, T, -1))
            x = x + pos
        at = None if at is None else torch.as_tensor(at, device=tokens.device)
        for layer, block in enumerate(self.blocks):
            last = layer == len(self.blocks) - 1
            x = self._block(block, f"blocks.{layer}.", x, at if last else None, W, hook)
        if self.ln_final is not None:
            x = self._ln(self.ln_final, "ln_final.", x, W, hook)
        logits = _linear(x, W(self.unembed.W_U))
        return logits if self.n_runs else logits[0]

    def run_with_cache(self, tokens: torch.Tensor, **kw) -> tuple[torch.Tensor, dict]:
        """(logits at every position, {hook name: activation}) as TransformerLens returns them."""
        cache = {}
        return self(tokens, cache=cache, **kw), cache

    def _block(self, b, name, x, at, W, hook):
        """One block; with `at`, its output only at those positions (queries there only)."""
        x = hook(name + "hook_resid_pre", x)
        xn = self._ln(b.ln1, name + "ln1.", x, W, hook) if b.ln1 is not None else x
        xq, xqn = (x, xn) if at is None else (x[:, :, at], xn[:, :, at])
        a = b.attn
        q = hook(name + "attn.hook_q", self._heads(xqn, W(a.W_Q)))      # (R, B, K, h, e)
        k = hook(name + "attn.hook_k", self._heads(xn, W(a.W_K)))       # (R, B, T, h, e)
        v = hook(name + "attn.hook_v", self._heads(xn, W(a.W_V)))
        scores = q.transpose(2, 3) @ k.permute(0, 1, 3, 4, 2) / math.sqrt(self.d_head)  # (R, B, h, K, T)
        T = x.shape[2]
        qpos = torch.arange(T, device=x.device) if at is None else at
        mask = qpos.view(-1, 1) < torch.arange(T, device=x.device).view(1, -1)  # keys after the query
        scores = hook(name + "attn.hook_attn_scores", scores.masked_fill(mask, float("-inf")))
        pattern = hook(name + "attn.hook_pattern", scores.softmax(dim=-1))
        z = hook(name + "attn.hook_z", (pattern @ v.transpose(2, 3)).transpose(2, 3))  # (R, B, K, h, e)
        W_O = W(a.W_O)                                                   # (R, h, e, d)
        R, h, e, d = W_O.shape
        attn_out = hook(name + "hook_attn_out", _linear(z.flatten(-2), W_O.reshape(R, h * e, d)))
        x = xq + attn_out
        if b.mlp is None:
            return hook(name + "hook_resid_post", x)
        x = hook(name + "hook_resid_mid", x)
        xn = self._ln(b.ln2, name + "ln2.", x, W, hook) if b.ln2 is not None else x
        m = b.mlp
        pre = _linear(xn, W(m.W_in))
        if m.b_in is not None:
            pre = pre + W(m.b_in)[:, None, None]
        pre = hook(name + "mlp.hook_pre", pre)
        post = hook(name + "mlp.hook_post", F.relu(pre) if self.act == "relu" else F.gelu(pre))
        out = _linear(post, W(m.W_out))
        if m.b_out is not None:
            out = out + W(m.b_out)[:, None, None]
        x = x + hook(name + "hook_mlp_out", out)
        return hook(name + "hook_resid_post", x)

    @staticmethod
    def _heads(x, Wh):
        """x (R, B, T, d) through per-head weights (R, h, d, e): (R, B, T, h, e)."""
        R, h, d, e = Wh.shape
        return _linear(x, Wh.permute(0, 2, 1, 3).reshape(R, d, h * e)).unflatten(-1, (h, e))

    @staticmethod
    def _ln(ln, name, x, W, hook):
        x = x - x.mean(-1, keepdim=True)
        scale = hook(name + "hook_scale", (x.pow(2).mean(-1, keepdim=True) + LN_EPS).sqrt())
        x = hook(name + "hook_normalized", x / scale)
        return x * W(ln.w)[:, None, None] + W(ln.b)[:, None, None]


def _linear(x: torch.Tensor, Wr: torch.Tensor) -> torch.Tensor:
    """x (R, B, T, i) times each run's weight (R, i, o): one bmm over all B*T rows of a run
    (a broadcast matmul would run B small products and a B-fold weight gradient)."""
    R, B, T, i = x.shape
    return torch.bmm(x.reshape(R, B * T, i), Wr).view(R, B, T, -1)


class _Hooks:
    """Calls at each hook point: store the activation in `cache`, replace it by `hooks[name]`."""

    def __init__(self, cache, hooks, single):
        self.cache, self.hooks, self.single = cache, hooks or {}, single

    def __call__(self, name, x):
        if name in self.hooks:
            x = self._unpack(self.hooks[name](self._pack_view(x)))
        if self.cache is not None:
            self.cache[name] = self._pack_view(x)
        return x

    def _pack_view(self, x):
        """Batch first, heads as TransformerLens puts them: patterns (B, h, q, k), q/k/v/z
        (B, pos, h, e); a single model's without the run axis."""
        return x[0] if self.single else x

    def _unpack(self, x):
        return x.unsqueeze(0) if self.single else x
