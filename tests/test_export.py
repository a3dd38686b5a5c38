"""TransformerLens export: the HookedTransformer computes the project model's logits on every
input of the task, in float64 to 1e-9, for both layouts, with and without biases and positions."""

import pytest
import torch
from conftest import TINY, compose_cfg

import grok
from grok.train import run

tl = pytest.importorskip(
    "transformer_lens", reason="transformer-lens is not installed (pip install -e '.[interp]')")
from grok.export import to_hooked_transformer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = {
    # impl tables: the one-layer token-table model, flat parameter names
    "nanda (positions, MLP biases)": ["model=nanda"],
    "furuta (op token, no positions, no biases)": ["model=furuta", "task=poly", "op=x2+y2"],
    # impl hooked: the general model, TransformerLens names
    "nanda, hooked impl": ["model=nanda", "model.impl=hooked"],
    "2 layers, LayerNorm, GELU": ["model=transformer", "model.n_layers=2", "model.normalization=LN",
                                  "model.act=gelu", "model.layout=furuta", "task=sub"],
    "attention only, no positions": ["model=attn_only", "model.pos_embed=false", "model.n_layers=2"],
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_logits_equal_on_all_inputs_float64(tmp_path, overrides):
    cfg = compose_cfg(["logger=none", *TINY, "train.dtype=float64", "train.steps=20", *overrides])
    run(cfg, tmp_path)  # trained a little: biases and LayerNorm weights away from their init
    record = grok.load_run(tmp_path)
    task = record.task()
    tokens = torch.from_numpy(task.universe()[0])           # every (x, y) pair: p*p inputs
    assert len(tokens) == 23 * 23
    ours = record.model(dtype=torch.float64)
    hooked = to_hooked_transformer(tmp_path)
    assert isinstance(hooked, tl.HookedTransformer)
    assert next(hooked.parameters()).dtype == torch.float64  # the stored weights' dtype
    with torch.no_grad():
        want = ours.logits_at(tokens, task.positions)[:, 0]
        got = hooked(tokens)[:, task.positions[0]]
    assert got.shape == want.shape == (23 * 23, 23)
    assert (got - want).abs().max().item() < 1e-9
    assert want.abs().max().item() > 1e-2  # not two zero tensors


def test_a_kept_step_exports_its_own_weights_and_hooks_match(tmp_path):
    cfg = compose_cfg(["logger=none", *TINY, "train.dtype=float64", "model.impl=hooked",
                       "train.snapshot_every=20"])
    run(cfg, tmp_path)
    record = grok.load_run(tmp_path)
    tokens = torch.from_numpy(record.task().universe()[0])
    ours = record.model(20)
    hooked = to_hooked_transformer(tmp_path, step=20)
    with torch.no_grad():
        want, cache = ours.run_with_cache(tokens)
        got, tl_cache = hooked.run_with_cache(tokens)
        final = to_hooked_transformer(tmp_path)(tokens)
    assert (got - want).abs().max().item() < 1e-9
    assert (final - got).abs().max().item() > 1e-6  # step 20 is not the final model
    for name in ("hook_embed", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"):
        assert (tl_cache[name] - cache[name]).abs().max().item() < 1e-9, name


def test_the_mlp_model_is_refused_with_a_reason(tmp_path):
    run(compose_cfg(["logger=none", *TINY, "model=mlp", "train.steps=10"]), tmp_path)
    with pytest.raises(ValueError, match="not a transformer"):
        to_hooked_transformer(tmp_path)
