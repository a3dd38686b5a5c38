"""Mixtures (seed 002): several ops in one model, each with its own op token; metrics, measures
and a verdict per op, locally and in W&B; bad ops refused one by one; mixture runs pack."""

import json

import pandas as pd
import pytest
import torch
from conftest import TINY, compose_cfg, launch, read_metrics
from test_pack import assert_like_alone

from grok.checks import check
from grok.data import make_data
from grok.runs import group_curves
from grok.train import pack_key, run, train_pack
from grok.verdict import verdict

pytestmark = pytest.mark.usefixtures("one_thread")

MIX = ["task=mixture", "ops=[x+y,x*y]"]


@pytest.mark.parametrize("layout,op_pos", [("nanda", 2), ("furuta", 1)])
def test_each_op_has_its_own_token_and_its_own_labels(layout, op_pos):
    p = 23
    cfg = compose_cfg([*MIX, f"p={p}", f"model.layout={layout}"])
    task = check(cfg)
    assert task.vocab == p + 2 + 1 and task.groups == ("x+y", "xy")
    tokens, targets = task.universe()
    assert len(tokens) == 2 * p * p
    first, second = tokens[:p * p], tokens[p * p:]
    assert set(first[:, op_pos]) == {p + 1} and set(second[:, op_pos]) == {p + 2}  # distinct, not `=`
    num = [0, 2] if layout == "furuta" else [0, 1]
    x, y = tokens[:, num[0]], tokens[:, num[1]]
    assert (targets[:p * p, 2] == (x[:p * p] + y[:p * p]) % p).all()
    assert (targets[p * p:, 2] == (x[p * p:] * y[p * p:]) % p).all()
    assert tokens.max() < task.vocab


def test_single_op_runs_keep_their_tokens():
    """Mixtures add tokens; a single op's layout is as before: x+y's own token in furuta, `=` in
    nanda and for polynomials."""
    p = 23
    for layout, op, want in [("furuta", "x+y", p + 1), ("furuta", "x*y", p + 3),
                             ("furuta", "2x+y", p), ("nanda", "x*y", p)]:
        task = check(compose_cfg([f"p={p}", "task=poly", f"op={op}", f"model.layout={layout}"]))
        tokens, _ = task.universe()
        assert task.vocab == (p + 5 if layout == "furuta" else p + 1)
        assert set(tokens[:, 1 if layout == "furuta" else 2]) == {want}


def test_each_ops_split_is_the_split_of_its_single_run():
    p, frac, seed = 23, 0.4, 3
    mix = compose_cfg([*MIX, f"p={p}", f"frac={frac}", f"seed={seed}"])
    task = check(mix)
    data = make_data(task, mix)
    for i, op in enumerate(["x+y", "x*y"]):
        single = compose_cfg(["task=poly", f"op={op}", f"p={p}", f"frac={frac}", f"seed={seed}"])
        alone = make_data(check(single), single)
        mine = data.train[0][data.train[0][:, 2] == p + 1 + i][:, :2]  # nanda: [x, y, op_i]
        assert torch.equal(mine, alone.train[0][:, :2])
    assert data.n_train == 2 * round(frac * p * p)


def test_mixture_records_per_op_metrics_verdicts_and_wandb(tmp_path):
    from grok.wandb_offline import find_run_files, read_run, wait_until_finished

    summary = run(compose_cfg([*MIX, *TINY, "train.steps=40", "measures.full_every=2"]), tmp_path)
    rows = read_metrics(tmp_path)
    for r in rows:
        for side in ("train", "test"):
            for op in ("x+y", "xy"):
                assert 0 <= r[f"{side}_acc/{op}"] <= 1 and r[f"{side}_loss/{op}"] > 0
        # both ops have the same number of test pairs, so the whole is their mean
        assert r["test_acc"] == pytest.approx((r["test_acc/x+y"] + r["test_acc/xy"]) / 2)
    full = [r for r in rows if "key_freqs/x+y" in r]
    assert full and all("key_freqs/xy" in r and "key_freqs" not in r for r in full)
    assert "gini_embed" in rows[0]  # the weights' measures once, under their usual names
    # the verdict of each op is that of its own curves
    for name, curve in zip(("x+y", "xy"), group_curves(rows, ("x+y", "xy"))[1:]):
        assert summary["per_op"][name] == verdict(curve, 0.99, 2.0)
    assert summary["ops"] == ["x+y", "xy"] and summary["all_grokked"] is False
    assert json.loads((tmp_path / "summary.json").read_text())["per_op"] == summary["per_op"]
    [f] = find_run_files(tmp_path)
    wait_until_finished(f)
    w = read_run(f)
    assert [h["ops/test_acc/xy"] for h in w["history"]] == [r["test_acc/xy"] for r in rows]
    assert [h["ops/neuron_freq/xy/_type"] for h in w["history"] if "ops/neuron_freq/xy/_type" in h] == \
        ["histogram"] * len(full)  # a per-op measure in the ops section too
    assert w["summary"]["per_op"]["x+y"]["verdict"] == summary["per_op"]["x+y"]["verdict"]
    assert w["config"]["ops"] == ["x+y", "x*y"]


def test_bad_ops_are_refused_one_by_one(tmp_path):
    from launch import check

    for ops, want in [("[x+y,x+z]", "ops[1]: "), ("[x+y,y+x]", "ops[1]='y+x': the same op as ops[0]"),
                      ("[]", "ops=[]: must be a non-empty list"), ("[x+y,23x]", "ops[1]: ")]:
        error, _ = check([*MIX, f"ops={ops}", "p=23"])
        assert error and want in error and "\n" not in error, (ops, error)
    r = launch([*MIX, "ops=[x+y,x/z]", "p=23", "logger=none"], tmp_path)  # as a user sees it
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "ops[1]" in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_mixture_runs_pack_and_record_what_they_record_alone(tmp_path):
    base = [*MIX, *TINY, "logger=none", "train.dtype=float64", "train.steps=30"]
    cfgs = [compose_cfg([*base, "seed=0"]), compose_cfg([*base, "seed=1", "ops=[x-y,2x+y]"])]
    assert pack_key(cfgs[0]) == pack_key(cfgs[1])  # same number of ops: same shapes
    three = compose_cfg([*base, "ops=[x+y,x-y,x*y]"])
    assert pack_key(three) != pack_key(cfgs[0])     # another vocabulary
    train_pack(cfgs, [tmp_path / "pack0", tmp_path / "pack1"])
    for i, c in enumerate(cfgs):
        run(c, tmp_path / f"alone{i}")
        assert_like_alone(tmp_path / f"alone{i}", tmp_path / f"pack{i}")


def _record(folder, mixture, seed, per_op, frac=0.5):
    folder.mkdir(parents=True)
    per_op = {op: {"verdict": v, "best_test_acc": acc, "grok_step": 100 if v == "grokked" else None}
              for op, (v, acc) in per_op.items()}
    summary = {"status": "complete", "task": "mixture", "mixture": mixture, "p": 23, "frac": frac,
               "seed": seed, "model": "nanda", "optimizer": "adamw", "verdict": "did not generalise",
               "best_test_acc": 0.5, "per_op": per_op}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text("p: 23\n")


def test_mixture_table_has_a_column_per_mixture(tmp_path, capsys):
    from analysis.__main__ import main

    G, N = "grokked", "did not generalise"
    _record(tmp_path / "a0", "{x+y, xy}", 0, {"x+y": (G, 1.0), "xy": (G, 1.0)})
    _record(tmp_path / "a1", "{x+y, xy}", 1, {"x+y": (G, 1.0), "xy": (N, 0.4)})
    _record(tmp_path / "b0", "{x+y, x-y}", 0, {"x+y": (G, 1.0), "x-y": (G, 1.0)})
    _record(tmp_path / "b1", "{x+y, x-y}", 1, {"x+y": (G, 1.0), "x-y": (G, 0.995)})
    _record(tmp_path / "c0", "{x+y, x-y}", 0, {"x+y": (N, 0.3), "x-y": (N, 0.2)}, frac=0.3)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text(json.dumps({"status": "complete", "task": "mixture"}))
    (tmp_path / "bad" / "config.yaml").write_text("p: 23\n")
    main(["mixtures", str(tmp_path), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert "no per-op verdicts" in err and str(tmp_path / "bad") in err
    [csv] = (tmp_path / "out").glob("mixtures_*.csv")
    table = pd.read_csv(csv, index_col="frac")
    assert sorted(table.columns) == ["{x+y, x-y}", "{x+y, xy}"]
    assert table.loc[0.5, "{x+y, x-y}"] == "✓ 2/2"
    assert table.loc[0.5, "{x+y, xy}"] == "✓ 1/2 · x+y ✓ · xy 70%"
    assert table.loc[0.3, "{x+y, x-y}"] == "x+y 30% · x-y 20%"
