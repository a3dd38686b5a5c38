"""Hand a trained run to TransformerLens: `to_hooked_transformer(run_dir, step=None)`.

The project's transformers already use TransformerLens' names and (in, out) weight convention
(grok/models), so the export is a renaming plus what TransformerLens has and the project does
not: attention and unembedding biases (zero here), and a positional embedding (all zeros for a
model without one, which adds nothing). Both layouts (nanda `[x, y, =]` and furuta `[x, op, y]`)
are just vocabularies to it. The result computes the same logits at every position the project
model does (tests/test_export.py: all p*p inputs, float64, to 1e-9).

Needs the optional extra: `pip install -e '.[interp]'` (`transformer-lens<4`: 4.x has no
HookedTransformer).
"""

import torch

from grok.history import load_run

# The one-layer token-table model (grok/models/tables.py) names its parameters flat.
_FLAT = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U",
         **{w: f"blocks.0.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O")},
         **{w: f"blocks.0.mlp.{w}" for w in ("W_in", "W_out", "b_in", "b_out")}}


def _transformer_lens():
    try:
        import transformer_lens
    except ImportError:
        raise ImportError("the TransformerLens export needs the optional extra: "
                          "pip install -e '.[interp]' (transformer-lens<4)") from None
    return transformer_lens


def hooked_config(cfg, task, dtype=torch.float32, device="cpu"):
    """The HookedTransformerConfig of the run configured by `cfg` (a transformer model)."""
    tl = _transformer_lens()
    m = cfg.model
    if m.get("arch", "transformer") != "transformer":
        raise ValueError(f"model {m.name!r} (arch {m.arch}) is not a transformer: no TransformerLens export")
    return tl.HookedTransformerConfig(
        n_layers=m.n_layers, d_model=m.d_model, n_ctx=task.n_ctx, d_head=m.d_head, n_heads=m.n_heads,
        d_mlp=None if m.attn_only else m.d_mlp, d_vocab=task.vocab, d_vocab_out=task.n_out,
        act_fn=m.act, attn_only=m.attn_only, normalization_type=m.normalization,
        positional_embedding_type="standard", default_prepend_bos=False, init_weights=False,
        dtype=dtype, device=device)


def hooked_transformer(cfg, task, state: dict, dtype=torch.float32, device="cpu"):
    """A TransformerLens HookedTransformer with the project weights `state` (either model's)."""
    tl = _transformer_lens()
    model = tl.HookedTransformer(hooked_config(cfg, task, dtype, device))
    named = {_FLAT.get(k, k): v for k, v in state.items()}
    params = dict(model.named_parameters())
    unknown = sorted(set(named) - set(params))
    if unknown:
        raise ValueError(f"weights TransformerLens has no place for: {', '.join(unknown)}")
    with torch.no_grad():
        for name, p in params.items():
            if name in named:
                w = named[name]
                if w.shape != p.shape:
                    raise ValueError(f"{name}: shape {tuple(w.shape)}, TransformerLens has {tuple(p.shape)}")
                p.copy_(w)
            else:  # biases the project has not got, or no positional embedding: zero adds nothing
                p.zero_()
    return model.eval()


def to_hooked_transformer(run_dir, step: int | None = None, dtype=None, device="cpu"):
    """The run in `run_dir` as a TransformerLens HookedTransformer, with its weights at `step`
    (a kept step, see grok.history; None: the final weights). `dtype`: that of the stored
    weights unless given (float64 for exact comparisons)."""
    record = load_run(run_dir)
    state = record.weights(step)
    dtype = dtype or next(iter(state.values())).dtype
    return hooked_transformer(record.config, record.task(), state, dtype, device)
