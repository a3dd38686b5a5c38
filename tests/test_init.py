"""Starting from another run (seed 002's pre-grokked modules) and frozen parameters: frozen
weights end bit-identical (no gradient, no weight decay), alone and in packs; a bad source is
refused up front with one line; a transfer run records its source and shows in the transfer
table beside the run from scratch."""

import json

import pytest
import torch
from conftest import TINY, compose_cfg, launch, read_metrics
from test_pack import assert_like_alone

from grok.models import build_model
from grok.train import pack_key, run, train_pack

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = [*TINY, "logger=none", "measures=off", "train.steps=40"]


def ckpt(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def seeded_init(cfg):
    from grok.checks import check

    torch.manual_seed(cfg.seed)
    return dict(build_model(cfg, check(cfg)).named_parameters())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished x+y run (nanda layout, p=23) to take weights from."""
    d = tmp_path_factory.mktemp("source")
    run(compose_cfg([*BASE, "seed=7"]), d)
    return d


def test_frozen_embedding_is_bit_identical_and_gets_no_weight_decay(tmp_path):
    cfg = compose_cfg([*BASE, "init=random_frozen_embed", "optimizer.weight_decay=1.0"])
    start = seeded_init(cfg)
    summary = run(cfg, tmp_path)
    ck = ckpt(tmp_path)
    assert torch.equal(ck["model"]["W_E"], start["W_E"].detach())  # weight decay 1 would shrink it
    assert not torch.equal(ck["model"]["W_U"], start["W_U"].detach())  # the rest trained
    assert "W_E" not in ck["optimizer"]["exp_avg"] and "W_U" in ck["optimizer"]["exp_avg"]
    assert summary["init_module"] == "random frozen embedding" and summary["init_freeze"] == ["W_E"]
    assert summary["init_from"] is None
    # the frozen run differs from the same run with everything trained
    plain = run(compose_cfg([*BASE, "optimizer.weight_decay=1.0"]), tmp_path / "plain")
    assert plain["final_train_loss"] != summary["final_train_loss"] and "init_module" not in plain


def test_frozen_runs_pack_as_alone_and_apart_from_trained_ones(tmp_path):
    base = [*BASE, "init=random_frozen_embed", "train.dtype=float64", "train.steps=30"]
    cfgs = [compose_cfg([*base, "seed=0"]), compose_cfg([*base, "seed=1", "task=poly", "op=x-y"])]
    assert pack_key(cfgs[0]) == pack_key(cfgs[1])
    assert pack_key(compose_cfg(BASE)) != pack_key(compose_cfg([*BASE, "init=random_frozen_embed"]))
    with pytest.raises(ValueError, match="must share"):
        train_pack([compose_cfg(BASE), cfgs[0]], [tmp_path / "x", tmp_path / "y"])
    train_pack(cfgs, [tmp_path / "pack0", tmp_path / "pack1"])
    for i, c in enumerate(cfgs):
        assert torch.equal(ckpt(tmp_path / f"pack{i}")["model"]["W_E"], seeded_init(c)["W_E"].detach())
        run(c, tmp_path / f"alone{i}")
        assert_like_alone(tmp_path / f"alone{i}", tmp_path / f"pack{i}")


def test_loaded_and_frozen_transformer_keeps_the_sources_weights(tmp_path, source):
    cfg = compose_cfg([*BASE, "task=poly", "op=2x+y", "init=pretrained_transformer",
                       f"init.from={source}"])
    summary = run(cfg, tmp_path)
    got, src = ckpt(tmp_path)["model"], ckpt(source)["model"]
    frozen = ["W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "b_in", "b_out"]
    assert summary["init_load"] == summary["init_freeze"] == frozen
    assert all(torch.equal(got[k], src[k]) for k in frozen)
    assert not torch.equal(got["W_E"], src["W_E"]) and not torch.equal(got["W_U"], src["W_U"])
    assert summary["init_module"] == "transformer" and summary["init_source_op"] == "x+y"
    # loaded without freezing: it starts from the source and trains on
    loose = run(compose_cfg([*BASE, "task=poly", "op=2x+y", f"init.from={source}", "init.load=[all]"]),
                tmp_path / "loose")
    assert read_metrics(tmp_path / "loose")[0]["train_loss"] == pytest.approx(
        _loss_of(source, cfg), rel=1e-6)
    assert loose["init_freeze"] == []
    assert not torch.equal(ckpt(tmp_path / "loose")["model"]["W_E"], src["W_E"])


def _loss_of(source, cfg):
    """The source model's loss on the target's train set (what a run loading all of it starts at)."""
    from grok.checks import check
    from grok.data import make_data
    from grok.losses import loss_fn

    task = check(cfg)
    model = build_model(cfg, task)
    model.load_state_dict(ckpt(source)["model"])
    tokens, targets = make_data(task, cfg).train
    with torch.no_grad():
        return loss_fn(model.logits_at(tokens, task.positions).flatten(0, 1), targets.flatten()).item()


def test_bad_sources_are_refused_before_anything_runs(tmp_path, source):
    from launch import check

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    ck = ckpt(source)
    ck["done"] = False
    torch.save(ck, unfinished / "checkpoint.pt")
    embed = [*TINY, "task=poly", "op=2x+y", "init=pretrained_embed"]
    for args, want in [
        ([f"init.from={source}", "p=29"],
         "W_E is (24, 32) there but (30, 32) here (source p=23"),
        ([f"init.from={source}", "model=furuta"],
         "layout=nanda; this run p=23, op=2x+y, model=furuta, layout=furuta"),
        ([f"init.from={unfinished}"], "the source run is incomplete"),
        ([f"init.from={tmp_path / 'nowhere'}"], "no such run folder or checkpoint"),
        ([f"init.from={tmp_path}"], "holds no checkpoint.pt"),
        ([], "init.from=???: needs a value"),
        ([f"init.from={source}", "init.load=[W_X]"], "'W_X' is no parameter of this model"),
    ]:
        error, _ = check([*embed, *args])
        assert error and want in error and "\n" not in error, (args, error)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    error, _ = check([*embed, f"init.from={tmp_path / 'garbage'}"])
    assert "is not a readable checkpoint" in error
    r = launch([*embed, f"init.from={source}", "p=29", "logger=none"], tmp_path)  # as a user sees it
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "init.from=" in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_sweeps_take_several_sources(tmp_path, source):
    from launch import check, plan

    other = tmp_path / "other"
    run(compose_cfg([*BASE, "seed=8"]), other)
    args = ["-m", *TINY, "task=poly", "op=2x+y", "init=pretrained_embed", f"init.from={source},{other}"]
    assert len(plan(args)[0]) == 2 and check(args) == (None, 2)


def test_transfer_is_recorded_and_shows_beside_the_run_from_scratch(tmp_path, source):
    from analysis.__main__ import main
    from grok.wandb_offline import find_run_files, read_run, wait_until_finished

    target = ["task=poly", "op=2x+y", "frac=0.3", *TINY, "train.steps=30", "measures=off"]
    scratch = run(compose_cfg(target), tmp_path / "scratch")
    moved = run(compose_cfg([*target, "init=pretrained_embed", f"init.from={source}"]), tmp_path / "embed")
    assert moved["init_from"] == str((source / "checkpoint.pt").resolve())
    src = json.loads((source / "summary.json").read_text())
    assert moved["init_source_verdict"] == src["verdict"] and moved["init_source_op"] == "x+y"
    assert moved["init_module"] == "embedding" and "init_module" not in scratch
    config = (tmp_path / "embed" / "config.yaml").read_text()
    assert f"from: {source}" in config and "- embed" in config
    [f] = find_run_files(tmp_path / "embed")
    wait_until_finished(f)
    w = read_run(f)
    assert w["config"]["init"]["from"] == str(source)
    assert w["config"]["init_source"]["init_source_verdict"] == src["verdict"]
    main(["transfer", str(tmp_path / "scratch"), str(tmp_path / "embed"), "--out", str(tmp_path / "a")])
    [md] = (tmp_path / "a").glob("transfer_*.md")
    lines = md.read_text().splitlines()
    row = next(line for line in lines if line.startswith("| x+y embedding"))
    assert "(scratch " in row and next(line for line in lines if line.startswith("| from scratch"))


@pytest.mark.slow  # ~60 s: 363 jobs composed and checked
def test_presets_expand_validate_and_name_their_sources(tmp_path, monkeypatch):
    """furuta_mixtures: 7 mixtures x 7 fracs x 3 seeds; furuta_transfer is refused until its
    sources exist where furuta_sources puts them, then every job validates."""
    from launch import check, plan

    assert check(["-m", "experiment=furuta_mixtures"]) == (None, 147)
    monkeypatch.chdir(tmp_path)
    error, _ = check(["-m", "experiment=furuta_transfer"])
    assert "outputs/furuta_sources/experiment=furuta_sources,op=x+y,seed=0" in error
    sources, _, _ = plan(["-m", "experiment=furuta_sources"])
    assert len(sources) == 6
    from grok.checks import check as check_config
    from grok.record.identity import job_dirname

    for job in sources:  # stand-ins for the finished source runs: the model they would save
        cfg = compose_cfg(job)
        torch.manual_seed(0)
        folder = tmp_path / "outputs/furuta_sources" / job_dirname(job)
        folder.mkdir(parents=True)
        model = build_model(cfg, check_config(cfg))
        torch.save({"done": True, "model": model.state_dict(), "summary": {"verdict": "grokked"}},
                   folder / "checkpoint.pt")
    assert check(["-m", "experiment=furuta_transfer"]) == (None, 6 * 6 * 2 * 3)
