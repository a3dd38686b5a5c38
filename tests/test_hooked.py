"""The general transformer: its fast paths compute what the every-position model computes, its
hook names and shapes are TransformerLens's, and packs are independent runs.

The reference everywhere is `HookedTransformer(tokens)` with `at=None`: every position through
every layer, the textbook computation. The fast paths are the one-layer token-table model (where
`build_model` picks it) and the last block restricted to the answer positions (`at`)."""

import pytest
import torch
from conftest import compose_cfg

from grok.losses import loss_fn
from grok.models import HookedTransformer, Transformer, build_model
from grok.tasks import build_task

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-10
SMALL = dict(d_model=32, n_heads=4, d_head=8, d_mlp=64)
# One-layer model parameter -> hooked model parameter (the same weights, TransformerLens names).
TO_HOOKED = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_Q": "blocks.0.attn.W_Q",
             "W_K": "blocks.0.attn.W_K", "W_V": "blocks.0.attn.W_V", "W_O": "blocks.0.attn.W_O",
             "W_in": "blocks.0.mlp.W_in", "b_in": "blocks.0.mlp.b_in", "W_out": "blocks.0.mlp.W_out",
             "b_out": "blocks.0.mlp.b_out", "W_U": "unembed.W_U"}


def hooked(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab=13, n_out=11, n_ctx=9, **SMALL) | kw
    return HookedTransformer(**args).double()


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: w.grad.clone() for n, w in model.named_parameters()}


def targets_like(logits, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=g)
    t[..., 0] = -1  # some positions carry no target
    return t


@pytest.mark.parametrize("pos,bias,impl", [(True, True, "tables"), (False, False, "tables"),
                                           (True, True, "full")])
def test_one_layer_model_equals_the_hooked_model(pos, bias, impl):
    torch.manual_seed(0)
    old = Transformer(vocab=24, n_out=23, pos_embed=pos, mlp_bias=bias, impl=impl, **SMALL).double()
    new = HookedTransformer(vocab=24, n_out=23, n_ctx=3, pos_embed=pos, mlp_bias=bias, **SMALL).double()
    new.load_state_dict({TO_HOOKED[k]: v for k, v in old.state_dict().items()})
    tokens = torch.randint(0, 24, (64, 3), generator=torch.Generator().manual_seed(2))
    a, b = old.logits_at(tokens, [2]), new(tokens)[:, 2:]
    assert (a - b).abs().max() < TOL
    y = targets_like(a)[..., 0]
    ga = grads(old, loss_fn(a.flatten(0, 1).unsqueeze(0), y.unsqueeze(0)).sum())
    gb = grads(new, loss_fn(new(tokens)[:, 2], y).sum())
    for k, g in ga.items():
        assert (g - gb[TO_HOOKED[k]]).abs().max() < TOL, k


@pytest.mark.parametrize("kw", [dict(), dict(n_layers=2), dict(n_layers=2, attn_only=True),
                                dict(n_layers=3, normalization="LN", act="gelu"),
                                dict(pos_embed=False, mlp_bias=False)])
@pytest.mark.parametrize("at", [[8], [3, 5, 8], list(range(9))])
def test_answer_positions_only_equal_every_position(kw, at):
    """The last block at `at` only: logits and every gradient as the every-position model."""
    m = hooked(**kw)
    tokens = torch.randint(0, 13, (40, 9), generator=torch.Generator().manual_seed(3))
    full, fast = m(tokens)[:, at], m(tokens, at=at)
    assert fast.shape == (40, len(at), 11) and (full - fast).abs().max() < TOL
    y = targets_like(fast)
    g_full = grads(m, loss_fn(m(tokens)[:, at].flatten(0, 1).unsqueeze(0), y.flatten().unsqueeze(0)).sum())
    g_fast = grads(m, loss_fn(m(tokens, at=at).flatten(0, 1).unsqueeze(0), y.flatten().unsqueeze(0)).sum())
    for k in g_full:
        assert (g_full[k] - g_fast[k]).abs().max() < TOL, k


def test_ignored_targets_contribute_nothing():
    """A target of -1 adds nothing to the loss or any gradient, whatever the logits there."""
    m = hooked(n_layers=2)
    tokens = torch.randint(0, 13, (30, 9), generator=torch.Generator().manual_seed(4))
    at = [4, 6, 8]
    y = targets_like(m(tokens, at=at))
    y[:, 1] = -1
    loss = loss_fn(m(tokens, at=at).flatten(0, 1).unsqueeze(0), y.flatten().unsqueeze(0))
    kept = loss_fn(m(tokens, at=[4, 8]).flatten(0, 1).unsqueeze(0), y[:, [0, 2]].flatten().unsqueeze(0))
    assert (loss - kept).abs().max() < TOL
    g1 = grads(m, loss.sum())
    g2 = grads(m, loss_fn(m(tokens, at=[4, 8]).flatten(0, 1).unsqueeze(0),
                          y[:, [0, 2]].flatten().unsqueeze(0)).sum())
    for k in g1:
        assert (g1[k] - g2[k]).abs().max() < TOL, k


def test_pack_runs_are_the_single_models():
    models = [hooked(seed=s, n_layers=2, normalization="LN") for s in range(3)]
    pack = HookedTransformer.stack(models)
    tokens = torch.randint(0, 13, (3, 20, 9), generator=torch.Generator().manual_seed(5))
    out = pack(tokens, at=[6, 8])
    for r, m in enumerate(models):
        assert torch.equal(out[r], m(tokens[r], at=[6, 8]))
        assert torch.equal(pack.run(r)(tokens[r]), m(tokens[r]))
    two = pack.select(torch.tensor([2, 0]))
    assert torch.equal(two(tokens[[2, 0]])[0], models[2](tokens[2]))


# TransformerLens's HookedTransformer.run_with_cache lists these hook points for a model of the
# same config (from TransformerLens' TransformerBlock, Attention, LayerNorm, Embed and PosEmbed;
# hooks TL only calls with optional flags, like hook_attn_in or hook_result, are not listed).
def tl_hooks(n_layers, attn_only, ln):
    names = ["hook_embed", "hook_pos_embed"]
    for layer in range(n_layers):
        b = f"blocks.{layer}."
        names += [b + "hook_resid_pre"]
        names += [b + "ln1.hook_scale", b + "ln1.hook_normalized"] if ln else []
        names += [b + "attn.hook_" + h for h in ("q", "k", "v", "attn_scores", "pattern", "z")]
        names += [b + "hook_attn_out"]
        if not attn_only:
            names += [b + "hook_resid_mid"]
            names += [b + "ln2.hook_scale", b + "ln2.hook_normalized"] if ln else []
            names += [b + "mlp.hook_pre", b + "mlp.hook_post", b + "hook_mlp_out"]
        names += [b + "hook_resid_post"]
    return sorted(names + (["ln_final.hook_scale", "ln_final.hook_normalized"] if ln else []))


@pytest.mark.parametrize("n_layers,attn_only,ln", [(1, False, False), (2, True, False), (2, False, True)])
def test_hook_names_and_shapes_are_transformerlens(n_layers, attn_only, ln):
    m = hooked(n_layers=n_layers, attn_only=attn_only, normalization="LN" if ln else None)
    B, T, d, h, e, dm = 5, 9, SMALL["d_model"], SMALL["n_heads"], SMALL["d_head"], SMALL["d_mlp"]
    logits, cache = m.run_with_cache(torch.randint(0, 13, (B, T)))
    assert logits.shape == (B, T, 11)
    assert sorted(cache) == tl_hooks(n_layers, attn_only, ln)
    want = {"attn.hook_q": (B, T, h, e), "attn.hook_k": (B, T, h, e), "attn.hook_v": (B, T, h, e),
            "attn.hook_z": (B, T, h, e), "attn.hook_attn_scores": (B, h, T, T),
            "attn.hook_pattern": (B, h, T, T), "mlp.hook_pre": (B, T, dm), "mlp.hook_post": (B, T, dm),
            "hook_scale": (B, T, 1)}
    for name, act in cache.items():
        shape = next((s for k, s in want.items() if name.endswith(k)), (B, T, d))
        assert tuple(act.shape) == shape, name
    p = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(p.sum(-1), torch.ones(B, h, T, dtype=p.dtype)) and (p.triu(1) == 0).all()


def test_hooks_patch_activations():
    """Zeroing layer 0's attention pattern (a patch) changes the logits exactly as removing it."""
    m = hooked(n_layers=2, attn_only=True)
    tokens = torch.randint(0, 13, (6, 9))
    patched = m(tokens, hooks={"blocks.0.hook_attn_out": lambda a: torch.zeros_like(a)})
    _, cache = m.run_with_cache(tokens, hooks={"blocks.0.hook_attn_out": lambda a: 0 * a})
    assert torch.equal(cache["blocks.0.hook_attn_out"], torch.zeros_like(cache["blocks.0.hook_attn_out"]))
    assert torch.equal(cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_pre"])
    assert not torch.allclose(patched, m(tokens))


@pytest.mark.parametrize("overrides,kind", [
    ([], Transformer), (["model.impl=full"], Transformer), (["model.impl=hooked"], HookedTransformer),
    (["model.n_layers=2"], HookedTransformer), (["model=attn_only"], HookedTransformer),
    (["model.normalization=LN"], HookedTransformer), (["task=digits_add"], HookedTransformer),
    (["task=max_element"], Transformer), (["model=mlp"], None)])
def test_build_model_takes_the_token_tables_only_where_exact(overrides, kind):
    from grok.checks import check
    from grok.models import MLP

    cfg = compose_cfg(["p=23", *overrides])
    task = check(cfg)
    model = build_model(cfg, task)
    assert type(model) is (kind or MLP)
    if kind is Transformer:
        assert model.impl == ("full" if "model.impl=full" in overrides else "tables")
    tokens = torch.from_numpy(build_task(cfg).universe()[0][:7] if task.finite else task.sample(
        7, __import__("numpy").random.default_rng(0))[0])
    assert model.logits_at(tokens, task.positions).shape == (7, len(task.positions), task.n_out)
