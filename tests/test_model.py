"""The token-table transformer must compute exactly what the every-position reference computes.

`impl="tables"` is the model every run trains; `impl="full"` is the textbook computation of the
same function. In float64 they must agree to rounding in logits, in every parameter's gradient
and in the cache the progress measures read, for both token layouts. The rest pins the model's
interface: researcher parameter names, deterministic init, W_L, and the torch.func door
(functional_call, vmap over stacked parameter sets) that batched runs will go through.
"""

import pytest
import torch
from torch.func import functional_call, grad, vmap

from grok.data import tokens_for
from grok.layouts import vocab_size
from grok.losses import loss_fn
from grok.models.tables import Transformer
from grok.ops import parse_op

# layout -> (pos_embed, mlp_bias): nanda has learned positions and MLP biases, furuta neither.
LAYOUTS = {"nanda": (True, True), "furuta": (False, False)}
SMALL = dict(d_model=32, n_heads=4, d_head=8, d_mlp=64)
REFERENCE = dict(d_model=128, n_heads=4, d_head=32, d_mlp=512)
TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")


def make(layout, p, impl="tables", seed=0, dims=SMALL):
    pos, bias = LAYOUTS[layout]
    torch.manual_seed(seed)
    return Transformer(vocab=vocab_size(layout, p), n_out=p, pos_embed=pos, mlp_bias=bias,
                       impl=impl, **dims).double()


def pair(layout, p, dims=SMALL, seed=0):
    """(tables, full) with identical weights."""
    tables = make(layout, p, "tables", seed, dims)
    full = make(layout, p, "full", seed, dims)
    full.load_state_dict(tables.state_dict())
    return tables, full


def random_tokens(layout, p, n, seed=1):
    """Any token at any position (the tables cover the whole vocabulary at every position)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size(layout, p), (n, 3), generator=g)


def layout_tokens(layout, p, n, seed=2, op="x+y"):
    """Well-formed sequences: nanda [x, y, =]; furuta [x, op, y] with the op token in the middle."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, p, (2, n), generator=g)
    t = tokens_for(parse_op(op), layout, p, x, y)
    if layout == "furuta":
        assert (t[:, 1] >= p).all() and (t[:, [0, 2]] < p).all()
    else:
        assert (t[:, 2] == p).all()
    return t


def batches(layout, p, n=200):
    return [random_tokens(layout, p, n), layout_tokens(layout, p, n),
            layout_tokens(layout, p, n, op="x-y")]


def grads(model, tokens, labels):
    model.zero_grad(set_to_none=True)
    logits = model(tokens)
    loss_fn(logits, labels).backward()
    return logits.detach(), {n: q.grad.clone() for n, q in model.named_parameters()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tables_match_full_logits_and_gradients(layout):
    p = 13
    tables, full = pair(layout, p)
    g = torch.Generator().manual_seed(3)
    for tokens in batches(layout, p):
        labels = torch.randint(0, p, (len(tokens),), generator=g)
        lt, gt = grads(tables, tokens, labels)
        lf, gf = grads(full, tokens, labels)
        assert lt.shape == lf.shape == (len(tokens), p)
        assert (lt - lf).abs().max().item() < TOL
        assert gt.keys() == gf.keys() == dict(tables.named_parameters()).keys()
        for name in gt:
            assert gt[name].abs().max() > 0, f"{name} gets no gradient"
            err = (gt[name] - gf[name]).abs().max().item()
            assert err < TOL, f"{layout} grad {name}: max abs diff {err:.2e}"


@pytest.mark.parametrize("layout,p", [("nanda", 113), ("furuta", 97)])
def test_tables_match_full_at_reference_size(layout, p):
    tables, full = pair(layout, p, REFERENCE)
    tokens = torch.cat([random_tokens(layout, p, 256), layout_tokens(layout, p, 256)])
    labels = torch.randint(0, p, (len(tokens),), generator=torch.Generator().manual_seed(4))
    lt, gt = grads(tables, tokens, labels)
    lf, gf = grads(full, tokens, labels)
    assert (lt - lf).abs().max().item() < TOL
    for name in gt:
        assert (gt[name] - gf[name]).abs().max().item() < TOL, name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cache_matches_between_impls(layout):
    p, dims = 13, SMALL
    tables, full = pair(layout, p)
    tokens = torch.cat(batches(layout, p, 64))
    B, h, n = len(tokens), dims["n_heads"], tokens.shape[1]
    ct, cf = {}, {}
    with torch.no_grad():
        tables(tokens, cache=ct), full(tokens, cache=cf)
    expected = {"attn": (B, h, n), "mlp_pre": (B, dims["d_mlp"]), "mlp_post": (B, dims["d_mlp"]),
                "resid_final": (B, dims["d_model"])}
    for c in (ct, cf):
        assert {k: tuple(v.shape) for k, v in c.items()} == expected
    for k in expected:
        assert (ct[k] - cf[k]).abs().max().item() < TOL, k
    assert (ct["mlp_post"] == ct["mlp_pre"].clamp(min=0)).all()
    # The cache is read before the unembed: resid_final @ W_U is the logits.
    with torch.no_grad():
        ref = full(tokens)
    assert (ct["resid_final"] @ tables.W_U - ref).abs().max().item() < TOL
    assert (cf["resid_final"] @ full.W_U - ref).abs().max().item() < TOL


@pytest.mark.parametrize("impl", ["tables", "full"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_passing_a_cache_does_not_change_the_logits(layout, impl):
    model = make(layout, 13, impl)
    tokens = random_tokens(layout, 13, 50)
    with torch.no_grad():
        plain, cached = model(tokens), model(tokens, cache={})
    assert cached.shape == plain.shape == (50, 13)
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("impl", ["tables", "full"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_attention_rows_sum_to_one(layout, impl):
    model = make(layout, 13, impl)
    cache = {}
    with torch.no_grad():
        model(random_tokens(layout, 13, 100), cache=cache)
    attn = cache["attn"]
    assert (attn >= 0).all()
    assert (attn.sum(-1) - 1).abs().max().item() < 1e-12


@pytest.mark.parametrize("layout", LAYOUTS)
def test_W_L_shape_and_value(layout):
    p, dims = 13, SMALL
    model = make(layout, p)
    W_L = model.W_L()
    assert W_L.shape == (dims["d_mlp"], p)
    assert torch.equal(W_L, model.W_out @ model.W_U)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_is_deterministic_and_independent_of_impl(layout):
    a, b = make(layout, 13, "tables", seed=7), make(layout, 13, "tables", seed=7)
    c = make(layout, 13, "full", seed=7)
    d = make(layout, 13, "tables", seed=8)
    sa, sb, sc, sd = (m.state_dict() for m in (a, b, c, d))
    assert sa.keys() == sb.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]) and torch.equal(sa[k], sc[k]), k
    assert not torch.equal(sa["W_E"], sd["W_E"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parameter_names_are_the_researcher_names(layout):
    pos, bias = LAYOUTS[layout]
    p, dims = 13, SMALL
    model = make(layout, p)
    names = {"W_E", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U"}
    names |= {"W_pos"} if pos else set()
    names |= {"b_in", "b_out"} if bias else set()
    params = dict(model.named_parameters())
    assert set(params) == names
    assert set(model.state_dict()) == names  # no buffers or extra state
    assert list(model.buffers()) == []
    for absent in {"W_pos", "b_in", "b_out"} - names:
        assert getattr(model, absent) is None
    d, h, e, m, V = dims["d_model"], dims["n_heads"], dims["d_head"], dims["d_mlp"], vocab_size(layout, p)
    shapes = {"W_E": (V, d), "W_pos": (3, d), "W_Q": (h, d, e), "W_K": (h, d, e), "W_V": (h, d, e),
              "W_O": (h, e, d), "W_in": (d, m), "b_in": (m,), "W_out": (m, d), "b_out": (d,),
              "W_U": (d, p)}
    assert {k: tuple(v.shape) for k, v in params.items()} == {k: shapes[k] for k in names}


@pytest.mark.parametrize("impl", ["tables", "full"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_functional_call_reproduces_forward(layout, impl):
    model = make(layout, 13, impl)
    tokens = random_tokens(layout, 13, 50)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        ref = model(tokens)
    assert torch.equal(functional_call(model, params, (tokens,)), ref)
    # Other parameters really are used: perturbing one changes the output.
    params["W_U"] = params["W_U"] + 1.0
    assert not torch.allclose(functional_call(model, params, (tokens,)), ref)


def stacked(models):
    names = [n for n, _ in models[0].named_parameters()]
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n in names}


@pytest.mark.filterwarnings("error")  # a vmap fallback to a slow per-sample loop warns
@pytest.mark.parametrize("impl", ["tables", "full"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vmap_over_stacked_parameter_sets(layout, impl):
    p = 13
    models = [make(layout, p, impl, seed=s) for s in (0, 1)]
    params = stacked(models)
    tokens = torch.cat(batches(layout, p, 40))
    logits = vmap(lambda ps, t: functional_call(models[0], ps, (t,)), in_dims=(0, None))(params, tokens)
    assert logits.shape == (2, len(tokens), p)
    with torch.no_grad():
        for i, m in enumerate(models):
            assert (logits[i] - m(tokens)).abs().max().item() < TOL
    assert not torch.allclose(logits[0], logits[1])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vmap_of_grad_gives_each_runs_gradient(layout):
    """vmap(grad(loss)) over stacked runs: what a batched trainer would call each step."""
    p = 13
    models = [make(layout, p, "tables", seed=s) for s in (0, 1)]
    params = stacked(models)
    tokens = layout_tokens(layout, p, 100)
    labels = torch.randint(0, p, (100,), generator=torch.Generator().manual_seed(5))

    def loss(ps, t, y):
        return loss_fn(functional_call(models[0], ps, (t,)), y)

    g = vmap(grad(loss), in_dims=(0, None, None))(params, tokens, labels)
    for i, m in enumerate(models):
        _, ref = grads(m, tokens, labels)
        for name in ref:
            assert (g[name][i] - ref[name]).abs().max().item() < TOL, name
