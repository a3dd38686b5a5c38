"""Grokfast (EMA, MA), ⊥Grad and StableMax against their papers' update rules on hand-computed
cases, and packed == single for each (grok/optim.py, grok/losses.py)."""

import math

import pytest
import torch
from conftest import TINY, assert_same_run, compose_cfg, read_metrics

from grok.losses import stablemax, stablemax_ce
from grok.optim import SGD, Adam, AdamW, PackOptimizer
from grok.train import run, train_pack

RULE = {"adamw": AdamW, "adam": Adam, "sgd": SGD}  # the update rule of each kind


def sgd(w, **kw):
    """Plain SGD with lr 1 (no decay, momentum or warmup): the update is -1 x the transformed
    gradient, so the weights show what the transform made of it."""
    return PackOptimizer({"w": w}, SGD, lr=[1.0] * w.shape[0], weight_decay=[0.0] * w.shape[0],
                         warmup_steps=[0] * w.shape[0], momentum=[0.0] * w.shape[0], **kw)


def steps_with(opt, w, grads):
    """Apply the gradients one update each; the transformed gradient of each update."""
    seen = []
    for g in grads:
        before = w.detach().clone()
        w.grad = torch.tensor(g, dtype=torch.float64).view_as(w)
        opt.step()
        seen.append((before - w.detach()).flatten().tolist())
    return seen


def test_grokfast_ema_matches_the_paper_on_a_hand_computed_case():
    # alpha 0.5, lamb 2: ema_1 = g_1 = 1 -> 1 + 2*1 = 3; ema_2 = .5*1 + .5*3 = 2 -> 3 + 2*2 = 7;
    # ema_3 = .5*2 + .5*(-1) = .5 -> -1 + 2*.5 = 0.
    w = torch.nn.Parameter(torch.zeros(1, 1, dtype=torch.float64))
    opt = sgd(w, grokfast={"filter": "ema", "alpha": [0.5], "lamb": [2.0]})
    assert steps_with(opt, w, [1.0, 3.0, -1.0]) == [[3.0], [7.0], [0.0]]


def test_grokfast_ma_matches_the_paper_on_a_hand_computed_case():
    # window 2, lamb 1: no change until 2 gradients were seen (the reference's warmup), then
    # g + mean(last 2): 1 -> 1; 3 -> 3 + 2 = 5; 5 -> 5 + 4 = 9; -1 -> -1 + 2 = 1.
    w = torch.nn.Parameter(torch.zeros(1, 1, dtype=torch.float64))
    opt = sgd(w, grokfast={"filter": "ma", "window": 2, "lamb": [1.0]})
    assert steps_with(opt, w, [1.0, 3.0, 5.0, -1.0]) == [[1.0], [5.0], [9.0], [1.0]]


def test_orthogonal_gradient_matches_the_paper_on_a_hand_computed_case():
    # w = (1, 0), g = (1, 1): the part along w, (1, 0), goes; (0, 1) is rescaled to |g| = sqrt 2.
    w = torch.nn.Parameter(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    opt = sgd(w, orthogonal=True)
    [step] = steps_with(opt, w, [[1.0, 1.0]])
    assert step == pytest.approx([0.0, math.sqrt(2)], abs=1e-15)
    # w = (3, 4), g = (3, 4) (all along w): nothing orthogonal is left, the step is ~0.
    w2 = torch.nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    [step] = steps_with(sgd(w2, orthogonal=True), w2, [[3.0, 4.0]])
    assert max(map(abs, step)) < 1e-6


def test_orthogonal_gradient_keeps_the_weight_norm_to_first_order():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(1, 5, 7, dtype=torch.float64))
    opt = sgd(w, orthogonal=True)
    opt.params["w"].grad = torch.randn(1, 5, 7, dtype=torch.float64)
    g_norm = opt.params["w"].grad.norm()
    before = w.detach().clone()
    opt.step()
    step = before - w.detach()
    assert abs((step * before).sum()) < 1e-12          # orthogonal to w
    assert step.norm().item() == pytest.approx(g_norm.item(), rel=1e-12)  # and as long as g


def test_stablemax_cross_entropy_matches_the_paper_on_a_hand_computed_case():
    # logits (2, -1, 0): s = (3, 1/2, 1), sum 4.5; label 0: loss = -log(3/4.5) = log 1.5.
    x = torch.tensor([[2.0, -1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = stablemax_ce(x, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(1.5), rel=1e-15)
    loss.sum().backward()
    # d/dx_i [log sum s - log s_0] = s_i'/4.5 - [i = 0] s_0'/3 with s' = 1 (x >= 0), 1/(1-x)^2 (x < 0)
    want = [1 / 4.5 - 1 / 3, 0.25 / 4.5, 1 / 4.5]
    assert x.grad[0].tolist() == pytest.approx(want, rel=1e-14)
    assert stablemax(torch.tensor([-3.0, 0.0, 4.0])).tolist() == [0.25, 1.0, 5.0]


def test_stablemax_ignores_unlabelled_tokens_and_keeps_a_gradient_where_softmax_rounds_it_away():
    x = torch.tensor([[60.0, 0.0, -1.0], [1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    loss = stablemax_ce(x, torch.tensor([0, -1]))
    assert loss[1].item() == 0.0
    loss.sum().backward()
    assert x.grad[1].abs().sum() == 0.0                                   # label -1: no gradient
    assert (x.grad[0].abs() > 1e-4).all()                                 # StableMax still pulls
    # s = (61, 1, 1/2): loss log(62.5/61) ~ 0.024, where float32 softmax has rounded it to 0
    assert loss[0].item() == pytest.approx(math.log(62.5 / 61), rel=1e-14)
    assert torch.nn.functional.cross_entropy(x.detach().float()[:1], torch.tensor([0])).item() == 0.0


TRANSFORMS = {"ema": {"grokfast": {"filter": "ema", "alpha": [0.9, 0.5, 0.98], "lamb": [2.0, 0.5, 5.0]}},
              "ma": {"grokfast": {"filter": "ma", "window": 3, "lamb": [2.0, 0.5, 5.0]}},
              "orthogonal": {"orthogonal": True}}


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_packed_equals_single_bit_for_bit(kind, transform):
    """Three runs with their own hyperparameters stacked on the run axis, against each alone."""
    torch.manual_seed(1)
    R, shapes = 3, {"a": (4, 5), "b": (6,)}
    w0 = {n: torch.randn(R, *s) for n, s in shapes.items()}
    grads = [{n: torch.randn(R, *s) for n, s in shapes.items()} for _ in range(6)]

    def opt_for(idx):
        params = {n: torch.nn.Parameter(w[idx].clone()) for n, w in w0.items()}
        kw = {k: ({**v, **{h: [v[h][i] for i in idx] for h in ("alpha", "lamb") if h in v}}
                  if isinstance(v, dict) else v) for k, v in TRANSFORMS[transform].items()}
        opt = PackOptimizer(params, RULE[kind], lr=[[1e-2, 3e-2, 1e-1][i] for i in idx],
                            weight_decay=[[0.0, 0.5, 1.0][i] for i in idx],
                            warmup_steps=[[0, 2, 5][i] for i in idx],
                            betas=None if kind == "sgd" else [(0.9, 0.98)] * len(idx),
                            momentum=[0.9] * len(idx) if kind == "sgd" else None, **kw)
        for g in grads:
            for n, w in params.items():
                w.grad = g[n][idx].clone()
            opt.step()
        return params

    pack = opt_for([0, 1, 2])
    for r in range(R):
        alone = opt_for([r])
        for n in shapes:
            assert torch.equal(pack[n].detach()[r], alone[n].detach()[0]), (n, r)


def test_grokfast_state_survives_a_checkpoint_round_trip():
    """run_state / load_run_state carry the filter's memory: a resumed run continues exactly."""
    torch.manual_seed(2)
    grads = [torch.randn(1, 3) for _ in range(5)]

    def run(split):
        w = torch.nn.Parameter(torch.ones(1, 3))
        opt = sgd(w, grokfast={"filter": "ma", "window": 2, "lamb": [1.0]})
        for i, g in enumerate(grads):
            if i == split:
                state = opt.run_state(0)
                w = torch.nn.Parameter(w.detach().clone())
                opt = sgd(w, grokfast={"filter": "ma", "window": 2, "lamb": [1.0]})
                opt.load_run_state(0, state)
            w.grad = g.clone()
            opt.step()
        return w.detach()

    assert torch.equal(run(split=3), run(split=99))


# -- through the trainer: packs of these runs are their runs alone ------------------------------

BASE = ["logger=none", *TINY, "task=poly", "measures=off", "train.threads=1", "train.steps=30"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("choice", [["optimizer=grokfast_ma", "optimizer.grokfast.window=4"],
                                    ["optimizer=grokfast_ema", "loss=stablemax"],
                                    ["optimizer=ortho_adamw", "loss=stablemax"]])
def test_a_pack_of_transformed_runs_is_each_run_alone_bit_for_bit(tmp_path, choice):
    cfgs = [compose_cfg([*BASE, *choice, *v]) for v in
            (["op=x+y", "seed=0"], ["op=x-y", "seed=1", "optimizer.lr=1e-2"], ["op=x2+y2", "seed=2"])]
    train_pack(cfgs, [tmp_path / f"pack{i}" for i in range(3)])
    for i, c in enumerate(cfgs):
        run(c, tmp_path / f"alone{i}")
        assert_same_run(tmp_path / f"alone{i}", tmp_path / f"pack{i}")


def test_runs_with_another_loss_base_filter_or_window_never_share_a_pack(tmp_path):
    cfg = compose_cfg([*BASE, "optimizer=grokfast_ma"])
    for other in (["optimizer=grokfast_ma", "optimizer.grokfast.window=7"],
                  ["optimizer=grokfast_ma", "loss=stablemax"], ["optimizer=adamw"],
                  ["optimizer=grokfast_ma", "optimizer._target_=grok.optim.Adam"],
                  ["optimizer=grokfast_ma", "optimizer.grokfast.filter=ema",
                   "+optimizer.grokfast.alpha=0.9"]):
        with pytest.raises(ValueError, match="must share"):
            train_pack([cfg, compose_cfg([*BASE, *other])], [tmp_path / "x", tmp_path / "y"])


def test_stablemax_changes_what_a_run_trains_on(tmp_path):
    a = run(compose_cfg(BASE), tmp_path / "ce")
    b = run(compose_cfg([*BASE, "loss=stablemax"]), tmp_path / "sm")
    assert a["final_train_loss"] != b["final_train_loss"]
    rows = read_metrics(tmp_path / "sm")
    assert rows[0]["step"] == 0 and math.isfinite(rows[-1]["test_loss"])


@pytest.mark.parametrize("overrides,message", [
    (["optimizer=grokfast_ema", "optimizer.grokfast.alpha=1.0"], r"optimizer.grokfast.alpha=1.0: must be"),
    (["optimizer=grokfast_ema", "optimizer.grokfast.lamb=-1"], r"optimizer.grokfast.lamb=-1: must be"),
    (["optimizer=grokfast_ma", "optimizer.grokfast.window=0"], r"optimizer.grokfast.window=0: must be"),
    (["optimizer=grokfast_ma", "optimizer.grokfast.filter=median"], r"filter='median': unknown"),
    (["optimizer=grokfast_ema", "optimizer._target_=grok.optim.RMSprop"],
     r"optimizer._target_='grok.optim.RMSprop': not an update rule"),
    (["optimizer=ortho_adamw", "optimizer.orthogonal=maybe"], r"optimizer.orthogonal='maybe': must be true"),
    (["loss=stablemax", "loss.name=softmax"], r"loss.name='softmax': unknown"),
])
def test_bad_transform_values_are_one_clear_line(overrides, message):
    from grok.checks import check
    from grok.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        check(compose_cfg(["logger=none", *overrides]))


@pytest.mark.parametrize("preset", ["grokfast", "grokfast_ma", "ortho", "stablemax"])
def test_presets_change_only_their_option_from_the_default_experiment(preset):
    from omegaconf import OmegaConf

    from grok.checks import check

    base = OmegaConf.to_container(compose_cfg(["experiment=default"]), resolve=False)
    cfg = compose_cfg([f"experiment={preset}"])
    check(cfg)
    got = OmegaConf.to_container(cfg, resolve=False)
    assert {k: v for k, v in got.items() if k not in ("optimizer", "loss")} == \
        {k: v for k, v in base.items() if k not in ("optimizer", "loss")}
    assert got["optimizer"]["lr"] == base["optimizer"]["lr"]
