"""A run's identity survives keys that do not change training (issue 18, item 7): a folder written
before a key existed resumes with it, and a key that changes training still refuses the folder."""

import pytest
from conftest import TINY, compose_cfg
from omegaconf import OmegaConf, open_dict

from grok.record.identity import changes, fingerprint
from grok.record.lock import RunRefused
from grok.record.status import job_status
from grok.train import run

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = ["logger=none", *TINY, "measures=off"]


def old_layout(cfg):
    """`cfg` as the code before these keys wrote it: no `optimized_metric`, no `_target_` in
    `model` or `optimizer`, and a Grokfast or ⊥Grad optimizer's update named by `base`."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(cfg):
        cfg.pop("optimized_metric", None)
        cfg.model.pop("_target_", None)
        target = cfg.optimizer.pop("_target_", None)
        if cfg.optimizer.name not in ("adamw", "adam", "sgd"):
            cfg.optimizer.base = target.rpartition(".")[2].lower()
    return cfg


def with_new_keys(cfg, target_model="grok.models.build_transformer", metric="best_test_acc"):
    """`cfg` with the objective a search sweeper reads and the function that builds its model."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(cfg):
        cfg.optimized_metric = metric
        cfg.model._target_ = target_model
    return cfg


def test_new_keys_compare_equal_to_a_fingerprint_without_them():
    old = fingerprint(old_layout(compose_cfg(BASE)))
    assert "optimized_metric" not in old and "_target_" not in old["model"]
    new = fingerprint(with_new_keys(compose_cfg(BASE)))
    assert changes(old, new) == []


def test_a_key_that_changes_training_still_counts():
    old = fingerprint(old_layout(compose_cfg(BASE)))
    assert changes(old, fingerprint(with_new_keys(compose_cfg([*BASE, "frac=0.5"])))) == ["frac"]
    # once a folder's fingerprint has the model's class, another class is another run
    stored = fingerprint(with_new_keys(compose_cfg(BASE)))
    other = fingerprint(with_new_keys(compose_cfg(BASE), target_model="grok.models.build_mlp"))
    assert changes(stored, other) == ["model._target_"]
    # the objective a sweeper reads never counts
    assert changes(stored, fingerprint(with_new_keys(compose_cfg(BASE), metric="grok_step"))) == []


def test_a_folder_written_before_the_new_keys_resumes_with_them(tmp_path):
    folder = tmp_path / "run"
    run(old_layout(compose_cfg([*BASE, "train.steps=20"])), folder)  # the layout before: neither key
    written = OmegaConf.load(folder / "config.yaml")
    assert "optimized_metric" not in written and "_target_" not in written.model
    assert "_target_" not in written.optimizer
    relaunch = with_new_keys(compose_cfg([*BASE, "train.steps=40"]))
    assert job_status(folder, fingerprint(relaunch))[0] == "complete"  # not "refused"
    s = run(relaunch, folder)
    assert s["resumed_from"] == 20 and s["steps"] == 40
    with pytest.raises(RunRefused, match="differs in frac"):
        run(with_new_keys(compose_cfg([*BASE, "frac=0.5", "train.steps=60"])), folder)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "grokfast_ema", "ortho_adamw"])
def test_an_optimizer_named_by_name_or_base_compares_equal_to_its_target(optimizer):
    """Folders written before `optimizer._target_` name the update by `optimizer.name` or, for
    a transform, `optimizer.base` (a key the configs dropped): the same run as its `_target_`."""
    old = fingerprint(old_layout(compose_cfg([*BASE, f"optimizer={optimizer}"])))
    assert "_target_" not in old["optimizer"]
    assert ("base" in old["optimizer"]) == (optimizer not in ("adamw", "sgd"))
    assert changes(old, fingerprint(compose_cfg([*BASE, f"optimizer={optimizer}"]))) == []


def test_a_base_other_than_the_target_is_another_run():
    old = fingerprint(old_layout(compose_cfg([*BASE, "optimizer=grokfast_ema"])))
    old["optimizer"]["base"] = "adam"  # Grokfast on Adam, written before _target_
    now = fingerprint(compose_cfg([*BASE, "optimizer=grokfast_ema"]))  # on AdamW
    assert changes(old, now) == ["optimizer._target_"]
    on_adam = fingerprint(compose_cfg([*BASE, "optimizer=grokfast_ema",
                                       "optimizer._target_=grok.optim.Adam"]))
    assert changes(old, on_adam) == []
    # an old adamw folder is not an SGD run whose config kept the adamw keys
    plain = fingerprint(old_layout(compose_cfg(BASE)))
    assert changes(plain, fingerprint(compose_cfg([*BASE, "optimizer._target_=grok.optim.SGD"]))) == \
        ["optimizer._target_"]


def test_a_grokfast_folder_written_with_base_resumes(tmp_path):
    folder = tmp_path / "run"
    base = [*BASE, "optimizer=grokfast_ema"]
    run(old_layout(compose_cfg([*base, "train.steps=20"])), folder)
    assert OmegaConf.load(folder / "config.yaml").optimizer.base == "adamw"
    relaunch = compose_cfg([*base, "train.steps=40"])
    assert job_status(folder, fingerprint(relaunch))[0] == "complete"  # not "refused"
    assert run(relaunch, folder)["resumed_from"] == 20
    with pytest.raises(RunRefused, match="differs in optimizer._target_"):
        run(compose_cfg([*base, "optimizer._target_=grok.optim.Adam", "train.steps=60"]), folder)
