"""The notebook API (grok/api.py): `grok.compose` checks as a launch does; `grok.run` trains configs
into a sweep folder that analysis reads, with the pack trainer, bit-identical to a run alone, and a
second call trains nothing."""

import pytest
import torch
from omegaconf import OmegaConf

import analysis
import grok
from grok.api import folder_name
from grok.record.identity import job_dirname
from grok.train import run as train_one

pytestmark = pytest.mark.usefixtures("one_thread")

# debug=fast: 20 steps, narrow layers, no W&B, no measures
FAST = ["debug=fast", "p=23", "frac=0.6"]


def test_compose_applies_overrides_and_group_choices():
    cfg = grok.compose([*FAST, "seed=3", "optimizer=adam", "train.snapshot_every=10"])
    assert (cfg.p, cfg.frac, cfg.seed, cfg.optimizer.name) == (23, 0.6, 3, "adam")
    assert cfg.train.steps == 20 and cfg.train.snapshot_every == 10
    assert "hydra" not in cfg
    assert grok.compose([]).p == 59  # the default experiment


@pytest.mark.parametrize("overrides, names", [
    (["frac=2"], "frac=2"),
    (["fracc=0.3"], "did you mean frac"),
    (["task=nope"], "unknown task 'nope'"),
    (["frac=0.3,0.5"], "frac=0.3,0.5: a sweep"),
    (["hydra/launcher=packed"], "hydra/launcher=packed"),
    (["p=abc"], "p='abc'"),
    (["optimizer.lr=-1"], "optimizer.lr"),
    ("frac=0.5", "give a list"),
])
def test_compose_refuses_bad_input_with_one_line_naming_it(overrides, names):
    with pytest.raises(grok.BadInput) as e:
        grok.compose(overrides)
    assert names in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides", [
    ["frac=0.5", "seed=3"], ["optimizer.lr=1e-2", "p=31"], ["optimizer.betas=[0.9,0.99]"],
    ["model.pos_embed=false", "train.dtype=float64"], ["optimizer.weight_decay=2", "train.steps=100"],
])
def test_a_folder_is_named_as_the_cli_names_a_job_of_the_same_value_overrides(overrides):
    assert folder_name(grok.compose(overrides)) == job_dirname(overrides)


def test_run_trains_a_pack_into_a_sweep_folder_and_a_second_call_trains_nothing(tmp_path):
    cfgs = [grok.compose([*FAST, f"seed={s}", "train.snapshot_every=10"]) for s in (0, 1)]
    sweep = tmp_path / "nb"
    records = grok.run(cfgs, sweep)
    # folders named as the CLI names a sweep job with the same overrides (defaults left out)
    assert [r.dir.name for r in records] == [
        job_dirname([o for o in FAST[1:] + [f"seed={s}"] if o != "seed=0"]
                    + ["model.d_model=32", "model.d_mlp=64", "train.steps=20", "train.eval_every=10",
                       "train.checkpoint_every=10", "train.early_stop_after=null",
                       "measures.every=0", "measures.full_every=0"])
        for s in (0, 1)]
    assert all(r.summary["status"] == "complete" and r.steps == [0, 10, 20] for r in records)
    assert {r.config.sweep_id for r in records} == {"nb"}  # the sweep folder names the sweep
    assert OmegaConf.is_interpolation(cfgs[0], "sweep_id")  # the caller's config is left as it was
    for r in records:  # each run's log lines in its own launch.log, as in a CLI sweep
        log = (r.dir / "launch.log").read_text()
        assert "pack of 2 runs" in log and f"{r.dir.name} step     20" in log
    df = analysis.load_sweep(sweep)
    assert sorted(df.seed) == [0, 1] and set(df.p) == {23} and df.attrs["skipped"] == []

    def stamps():  # every record's file and its time (.lock holds the last pid; launch.log
        # gets "already finished", as a CLI relaunch writes)
        return {f: f.stat().st_mtime_ns for r in records for f in r.dir.rglob("*")
                if f.is_file() and f.name not in (".lock", "launch.log")}

    before = stamps()
    again = grok.run(cfgs[1], sweep)  # one config; found complete, read back
    assert [r.dir for r in again] == [records[1].dir]
    assert stamps() == before and len(before) > 10
    assert "already finished" in (records[1].dir / "launch.log").read_text()


def test_run_is_bit_identical_to_the_same_run_trained_alone(tmp_path):
    cfgs = [grok.compose([*FAST, f"frac={f}"]) for f in (0.5, 0.7)]  # one pack, two train sizes
    packed = grok.run(cfgs, tmp_path / "sweep", max_pack=2)
    alone = tmp_path / "alone"
    train_one(OmegaConf.create(cfgs[1]), alone)
    w_alone = grok.load_run(alone).weights()
    w_packed = packed[1].weights()
    assert w_packed.keys() == w_alone.keys()
    assert all(torch.equal(w_packed[k], w_alone[k]) for k in w_alone)


def test_run_checks_every_config_before_training_any(tmp_path):
    good = grok.compose(FAST)
    bad = grok.compose(FAST)
    bad.frac = 1.5  # edited after compose: checked again by run
    with pytest.raises(grok.BadInput, match=r"config 1: frac=1.5"):
        grok.run([good, bad], tmp_path)
    with pytest.raises(grok.BadInput, match="same run"):
        grok.run([good, grok.compose([*FAST, "op=y+x"])], tmp_path)
    with pytest.raises(grok.BadInput, match="max_pack=0"):
        grok.run(good, tmp_path, max_pack=0)
    with pytest.raises(grok.BadInput, match="not list"):
        grok.run([["frac=0.5"]], tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_that_fails_is_named_and_the_others_complete(tmp_path):
    cfgs = [grok.compose([*FAST, f"seed={s}"]) for s in (0, 1)]
    theirs = tmp_path / folder_name(cfgs[1])  # the second run's folder holds another config's run
    train_one(grok.compose([*FAST, "seed=2"]), theirs)
    refused = r"1 of 2 run\(s\) failed.*seed=1.* another config \(differs in seed\)"
    with pytest.raises(grok.RunFailed, match=refused):
        grok.run(cfgs, tmp_path)
    assert grok.load_run(tmp_path / folder_name(cfgs[0])).summary["status"] == "complete"
    assert grok.load_run(theirs).config.seed == 2  # left as it was


def test_a_longer_budget_continues_the_same_run_in_the_same_folder(tmp_path):
    [short] = grok.run(grok.compose(FAST), tmp_path)
    [longer] = grok.run(grok.compose([*FAST, "train.steps=40"]), tmp_path)
    assert longer.dir == short.dir and (short.final_step, longer.final_step) == (20, 40)
    assert longer.summary["resumed_from"] == 20
    assert longer.metrics.step.tolist() == [0, 10, 20, 30, 40]
