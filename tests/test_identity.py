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
    """`cfg` as the code before these keys wrote it: no `optimized_metric`, no `model._target_`."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(cfg):
        cfg.pop("optimized_metric", None)
        cfg.model.pop("_target_", None)
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
    relaunch = with_new_keys(compose_cfg([*BASE, "train.steps=40"]))
    assert job_status(folder, fingerprint(relaunch))[0] == "complete"  # not "refused"
    s = run(relaunch, folder)
    assert s["resumed_from"] == 20 and s["steps"] == 40
    with pytest.raises(RunRefused, match="differs in frac"):
        run(with_new_keys(compose_cfg([*BASE, "frac=0.5", "train.steps=60"])), folder)
