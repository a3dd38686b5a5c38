"""Update rules are chosen by `optimizer._target_` among the classes registered in grok.optim:
a new optimizer is one class and one YAML file (the check asks the class what to check, the
trainer builds it), and a `_target_` that names anything else is one line, exit 2, before any
import or job."""

import shutil
import sys

import pytest
import torch
from conftest import CONF, TINY, launch
from hydra import compose, initialize_config_dir

from grok.checks import check
from grok.config import Bound, ConfigError
from grok.optim import RULES, PackOptimizer, UpdateRule, col, rule_target, to_device, update_rule
from grok.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


class SignDescent(UpdateRule):
    """w <- w - lr * scale * sign(g + wd w): a rule defined outside grok.optim, with a
    hyperparameter and a state buffer of its own."""

    HYPER = {**UpdateRule.HYPER, "scale": Bound(0.0, 1.0, hi_open=False)}
    STATE = ("last_sign",)

    @staticmethod
    def update(params, state, hp, steps, lr):
        c = to_device({"-step": -lr * hp["scale"], "wd": hp["weight_decay"]}, next(iter(params.values())))
        for n, w in params.items():
            s = torch.sign(w.grad + col(c["wd"], w) * w)
            state["last_sign"][n].copy_(s)
            w.add_(s * col(c["-step"], w))


def test_defining_a_rule_registers_it_under_its_dotted_name():
    target = rule_target(SignDescent)
    assert target == f"{__name__}.SignDescent" and RULES[target] is SignDescent
    assert update_rule({"_target_": target, "name": "sign"}) is SignDescent
    # configs written before _target_: the rule of their base, or else of their name
    assert [rule_target(update_rule({"name": n})) for n in ("adamw", "adam", "sgd")] == \
        ["grok.optim.AdamW", "grok.optim.Adam", "grok.optim.SGD"]
    assert update_rule({"name": "grokfast_ema", "base": "sgd"}) is RULES["grok.optim.SGD"]
    with pytest.raises(ConfigError, match=r"^optimizer._target_: missing, and optimizer.name='sign'"):
        update_rule({"name": "sign"})


def test_a_rule_updates_every_run_of_a_pack_by_its_own_hyperparameters():
    w = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    opt = PackOptimizer({"w": w}, SignDescent, lr=[0.5, 1.0], weight_decay=[0.0, 0.0],
                        warmup_steps=[0, 0], scale=[1.0, 0.25])
    w.grad = torch.tensor([[3.0, -2.0], [-1.0, 0.0]], dtype=torch.float64)
    opt.step()
    assert w.detach().tolist() == [[-0.5, 0.5], [0.25, 0.0]]
    assert opt.run_state(1)["last_sign"]["w"].tolist() == [-1.0, 0.0] and opt.run_state(1)["steps"] == 1


@pytest.fixture
def conf_with_rule(tmp_path):
    """The project's conf/ plus one file, conf/optimizer/sign.yaml naming SignDescent."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "optimizer" / "sign.yaml").write_text(
        f"_target_: {rule_target(SignDescent)}\nname: sign\nlr: 1e-2\nweight_decay: 0.0\n"
        "warmup_steps: 0\nscale: 0.5\n")
    return conf


def compose_in(conf, overrides):
    with initialize_config_dir(str(conf), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_a_new_rule_is_one_class_and_one_yaml(conf_with_rule, tmp_path):
    base = ["logger=none", *TINY, "measures=off", "train.steps=6", "train.eval_every=3"]
    cfg = compose_in(conf_with_rule, [*base, "optimizer=sign"])
    check(cfg)  # the check asks the rule what to check ...
    with pytest.raises(ConfigError, match=r"^optimizer.scale=2: must be a number in \(0.0, 1.0\]$"):
        check(compose_in(conf_with_rule, [*base, "optimizer=sign", "optimizer.scale=2"]))
    s = run(cfg, tmp_path / "sign")  # ... and the trainer builds it
    state = torch.load(tmp_path / "sign" / "checkpoint.pt", weights_only=True)["optimizer"]
    assert s["steps"] == 6 and state["steps"] == 6 and set(state) == {"steps", "last_sign"}
    assert all(set(t.unique().tolist()) <= {-1.0, 0.0, 1.0} for t in state["last_sign"].values())
    assert any(t.abs().sum() > 0 for t in state["last_sign"].values())
    adamw = run(compose_in(conf_with_rule, base), tmp_path / "adamw")
    assert s["final_train_loss"] != adamw["final_train_loss"]


@pytest.mark.parametrize("target", ["os.system", "grok.optim.PackOptimizer", "grok.optim.col",
                                    "grok.optim.RMSprop", "this.s"])
def test_a_target_that_names_no_registered_rule_is_one_config_error(target):
    with pytest.raises(ConfigError, match=rf"^optimizer._target_='{target}': not an update rule"):
        update_rule({"_target_": target, "name": "adamw"})
    assert "this" not in sys.modules  # looked up, never imported (a run folder is data)


@pytest.mark.parametrize("sweep", [[], ["-m", "seed=0,1"]], ids=["single", "sweep"])
def test_a_target_outside_the_registry_is_one_line_exit_2(tmp_path, sweep):
    for target in ("os.system", "grok.optim.RMSprop"):
        r = launch([*sweep, f"optimizer._target_={target}", *TINY, "logger=none"], cwd=tmp_path, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
        assert f"optimizer._target_='{target}'" in lines[0]
    assert list(tmp_path.iterdir()) == []
