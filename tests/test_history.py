"""Weight history (`train.snapshot_every`) and `grok.load_run`: snapshots at the configured steps,
the last one the final model, kept across a kill and a longer budget, per run in a pack."""

import pytest
import torch
from conftest import TINY, assert_same_run, compose_cfg

import grok
from grok.record.checkpoint import snapshot_path, snapshot_steps
from grok.train import run, train_pack

pytestmark = pytest.mark.usefixtures("one_thread")
SNAP = ["logger=none", *TINY, "train.snapshot_every=25"]


def weights_at(run_dir, step):
    ck = torch.load(snapshot_path(run_dir, step), weights_only=True)
    assert ck["step"] == step
    return ck["model"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp("straight")
    run(compose_cfg(SNAP), d)
    return d


def test_snapshots_at_the_configured_steps_and_the_last_is_the_final_model(straight):
    assert snapshot_steps(straight) == [0, 25, 50, 60]  # 60: the end, not a multiple of 25
    final = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    assert same(weights_at(straight, 60), final)
    assert not same(weights_at(straight, 50), final)
    assert all(v.dtype == torch.float32 for v in weights_at(straight, 0).values())


def test_snapshot_of_step_0_is_the_initialisation(straight, tmp_path):
    run(compose_cfg([*SNAP, "train.steps=1", "train.eval_every=1"]), tmp_path)
    assert same(weights_at(straight, 0), weights_at(tmp_path, 0))
    assert not same(weights_at(tmp_path, 0), weights_at(tmp_path, 1))


def test_off_by_default(tmp_path):
    run(compose_cfg(["logger=none", *TINY]), tmp_path)
    assert not (tmp_path / "snapshots").exists() and snapshot_steps(tmp_path) == []
    r = grok.load_run(tmp_path)
    assert r.steps == [60]  # the final weights, from the checkpoint


def test_load_run_round_trip(straight):
    r = grok.load_run(straight)
    assert r.steps == [0, 25, 50, 60] and r.final_step == 60
    assert r.summary["status"] == "complete" and r.config.train.snapshot_every == 25
    assert list(r.metrics.step) == list(range(0, 61, 10)) and "test_acc" in r.metrics
    for s in r.steps:
        assert same(r.weights(s), weights_at(straight, s))
    assert same(r.weights(), torch.load(straight / "checkpoint.pt", weights_only=True)["model"])
    with pytest.raises(KeyError, match="no weights kept at step 30"):
        r.weights(30)
    # the model with a kept step's weights computes the run's recorded test accuracy
    task = r.task()
    model = r.model(50)
    from grok.data import make_data

    data = make_data(task, r.config)
    tokens, targets = data.test[0], data.test[1]
    with torch.no_grad():
        logits = model.logits_at(tokens, task.positions)
    acc = (logits.argmax(-1) == targets).all(-1).double().mean().item()
    assert acc == pytest.approx(r.metrics.set_index("step").test_acc[50], abs=1e-12)


def test_killed_run_keeps_its_snapshots_and_resumes_bit_identical(straight, tmp_path, monkeypatch):
    from grok import runs

    evaluate = runs.Run.evaluate

    def dies_at_50(self, model, row):
        if self.step == 50:
            raise KeyboardInterrupt  # as a kill would: after the snapshot at 50, checkpoint at 40
        return evaluate(self, model, row)

    cfg = compose_cfg(SNAP)
    monkeypatch.setattr(runs.Run, "evaluate", dies_at_50)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path)
    monkeypatch.setattr(runs.Run, "evaluate", evaluate)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 40
    assert snapshot_steps(tmp_path) == [0, 25, 50]
    before = snapshot_path(tmp_path, 25).stat().st_mtime_ns
    snapshot_path(tmp_path, 50).write_bytes(b"a killed run's, to be replaced")
    run(cfg, tmp_path)
    assert_same_run(straight, tmp_path)
    assert snapshot_steps(tmp_path) == [0, 25, 50, 60]
    assert snapshot_path(tmp_path, 25).stat().st_mtime_ns == before  # earlier ones kept as they were
    for s in snapshot_steps(straight):
        assert same(weights_at(straight, s), weights_at(tmp_path, s)), s


def test_a_longer_budget_continues_the_history_as_if_trained_at_once(tmp_path):
    run(compose_cfg([*SNAP, "train.steps=80"]), tmp_path / "at_once")
    run(compose_cfg(SNAP), tmp_path / "continued")
    run(compose_cfg([*SNAP, "train.steps=80"]), tmp_path / "continued")
    assert snapshot_steps(tmp_path / "at_once") == [0, 25, 50, 75, 80]
    assert snapshot_steps(tmp_path / "continued") == [0, 25, 50, 75, 80]  # the end-only 60 gone
    for s in (0, 25, 50, 75, 80):
        assert same(weights_at(tmp_path / "at_once", s), weights_at(tmp_path / "continued", s))


def test_each_run_of_a_pack_writes_its_own_snapshots(straight, tmp_path):
    cfgs = [compose_cfg(SNAP), compose_cfg([*SNAP, "seed=1", "train.snapshot_every=20"])]
    dirs = [tmp_path / "a", tmp_path / "b"]
    train_pack(cfgs, dirs)
    assert snapshot_steps(dirs[0]) == [0, 25, 50, 60]
    assert snapshot_steps(dirs[1]) == [0, 20, 40, 60]
    for s in snapshot_steps(straight):  # run a in the pack is run a alone
        assert same(weights_at(straight, s), weights_at(dirs[0], s)), s
    assert not same(weights_at(dirs[0], 0), weights_at(dirs[1], 0))
    # a snapshot holds one run's weights, not the pack's storage
    size = snapshot_path(straight, 0).stat().st_size
    assert snapshot_path(dirs[1], 0).stat().st_size < 1.5 * size


def test_snapshot_every_is_checked_up_front():
    from grok.checks import check
    from grok.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.snapshot_every=0: must be an integer >= 1"):
        check(compose_cfg([*TINY, "train.snapshot_every=0"]))
