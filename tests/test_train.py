"""Training end to end: it groks, it is deterministic, and a killed run resumes bit for bit."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import ROOT, TINY, assert_same_run, compose_cfg, read_metrics, weights

from grok.checks import check
from grok.data import make_data
from grok.train import run


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The README's main job: the default config, trained to its verdict."""
    run_dir = tmp_path_factory.mktemp("default")
    summary = run(compose_cfg(["logger=none"]), run_dir)
    return run_dir, summary, pd.read_json(run_dir / "metrics.jsonl", lines=True, precise_float=True)


@pytest.mark.slow
def test_default_config_groks_with_a_real_delay(default_run):
    run_dir, summary, m = default_run
    memorised_not_general = m[(m.train_acc >= 0.99) & (m.test_acc < 0.5)]
    assert len(memorised_not_general), "no point with train acc >= 0.99 and test acc < 0.5"
    first = memorised_not_general.step.min()
    assert (m[m.step > first].test_acc >= 0.99).any()
    assert summary["verdict"] == "grokked"
    assert summary["memorisation_step"] <= first < summary["grok_step"]
    assert m.set_index("step").test_acc[summary["grok_step"]] >= 0.99
    assert json.loads((run_dir / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_progress_measures_move_as_published_across_grokking(default_run):
    """Nanda et al. 2023 / seed 002 for x+y: hidden progress shows before the test loss moves."""
    _, summary, m = default_run
    full = m[m.key_freqs.notna()].set_index("step")
    grok = summary["grok_step"]
    before = full[full.index < grok]
    assert len(before) >= 3 and len(full[full.index >= grok]) >= 1
    # excluded loss climbs far above the train loss while test accuracy is still below 0.99
    lifted = before[before.excluded_loss > 100 * before.train_loss]
    assert len(lifted) and (m.set_index("step").test_acc[lifted.index] < 0.99).all()
    assert before.excluded_loss.dropna().iloc[-1] > before.excluded_loss.dropna().iloc[0]
    # restricted loss (key frequencies only) falls to near the train loss by the end
    restricted = full.restricted_loss.dropna()
    assert restricted.iloc[-1] < 0.01 * restricted.iloc[0]
    # the embedding gets sparse in the Fourier basis: Gini up, FFS down
    assert m.gini_embed.iloc[-1] > 2 * m.gini_embed.iloc[0]
    assert m.ffs_embed.iloc[-1] < 0.5 * m.ffs_embed.iloc[0]
    assert full.n_key_freqs.iloc[-1] >= 1 and m.weight_sq_total.iloc[-1] < m.weight_sq_total.max()
    # the full set at the last point; the cheap set at every eval
    assert m.key_freqs.notna().iloc[-1] and m.gini_embed.notna().all()


def test_op_specific_measures_are_absent_not_zero_for_other_ops(tmp_path):
    run(compose_cfg(["logger=none", *TINY, "task=mul", "measures=dense"]), tmp_path)
    rows = read_metrics(tmp_path)
    assert all("key_freqs" in r and "fcr_embed" in r for r in rows)
    assert not any("excluded_loss" in r or "restricted_loss" in r for r in rows)


def test_same_config_and_seed_same_run_bit_for_bit(tmp_path):
    cfg = compose_cfg(["logger=none", *TINY])
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = run(compose_cfg(["logger=none", *TINY, "seed=1"]), tmp_path / "c")
    assert other["final_train_loss"] != read_metrics(tmp_path / "a")[-1]["train_loss"]


def test_split_is_a_function_of_seed_and_covers_every_pair():
    def split(*overrides):
        cfg = compose_cfg(["p=23", "frac=0.3", *overrides])
        return make_data(check(cfg), cfg)

    a, b, c = split(), split(), split("seed=1")
    assert torch.equal(a.train_idx, b.train_idx) and not torch.equal(a.train_idx, c.train_idx)
    tokens = torch.cat([a.train[0], a.test[0]])
    labels = torch.cat([a.train[1], a.test[1]])[:, 0]
    x, y = tokens[:, 0], tokens[:, 1]
    assert torch.equal((x * 23 + y).sort().values, torch.arange(23 * 23))
    assert len(a.train_idx) == round(0.3 * 529)
    assert torch.equal(labels, (x + y) % 23) and (tokens[:, 2] == 23).all()
    f = split("task=mul", "model=furuta")  # [x, *, y], "*" is token p+3
    ft = torch.cat([f.train[0], f.test[0]])
    fl = torch.cat([f.train[1], f.test[1]])[:, 0]
    assert (ft[:, 1] == 23 + 3).all() and torch.equal(fl, ft[:, 0] * ft[:, 2] % 23)


def test_finished_run_is_not_trained_again_and_other_config_is_refused(tmp_path):
    cfg = compose_cfg(["logger=none", *TINY])
    first = run(cfg, tmp_path)
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    assert run(cfg, tmp_path) == first
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime
    with pytest.raises(RuntimeError, match="differs in frac"):
        run(compose_cfg(["logger=none", *TINY, "frac=0.6"]), tmp_path)


def test_longer_budget_continues_a_finished_run_exactly(tmp_path):
    short = [*TINY, "train.steps=40", "logger=none"]
    run(compose_cfg(short), tmp_path / "a")
    run(compose_cfg([*short, "train.steps=60"]), tmp_path / "a")
    run(compose_cfg(["logger=none", *TINY]), tmp_path / "b")
    # The full measures the first budget's last eval (step 40) took are dropped on continuing:
    # a run never stopped does not take them there (tests/test_faults_records.py).
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_wandb_failure_keeps_the_local_record(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    summary = run(compose_cfg([*TINY, "logger.mode=online", "train.steps=20"]), tmp_path)
    assert "W&B disabled for this run" in caplog.text
    assert summary["status"] == "complete"
    assert len(read_metrics(tmp_path)) == 3


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted reference run for the interruption tests."""
    out = tmp_path_factory.mktemp("straight")
    subprocess.run([*RESUME_CMD, f"hydra.run.dir={out}"], check=True, capture_output=True, cwd=out)
    return out


RESUME_CMD = [sys.executable, str(ROOT / "launch.py"), *TINY, "logger=none", "train.steps=3000",
              "train.checkpoint_every=100", "train.eval_every=100"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR2], ids=["SIGKILL", "SIGUSR2"])
def test_interrupted_run_resumes_bit_identical(tmp_path, straight, sig):
    """SIGKILL: resume from the last periodic checkpoint. SIGUSR2 (SLURM's warning before
    preemption or a time limit): the run checkpoints the exact step first, then dies of it."""
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen([*RESUME_CMD, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # let it run past the checkpoint: metrics written after it must not survive
    proc.send_signal(sig)
    assert proc.wait() == -sig
    assert not (run_dir / "summary.json").exists(), "the run finished before it was interrupted"
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    if sig == signal.SIGUSR2:
        assert stopped_at % 100 != 0 or stopped_at > 100, "USR2 should checkpoint where it stopped"
    subprocess.run([*RESUME_CMD, f"hydra.run.dir={run_dir}"], check=True, capture_output=True,
                   cwd=tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == stopped_at
    assert 0 < stopped_at < 3000
    assert_same_run(straight, run_dir)


@pytest.mark.slow
def test_multiplication_keeps_ffs_high_while_fcr_falls(tmp_path):
    """Seed 002, section 7: for x*y (Furuta model) FFS stays at 1 while FCR falls as it groks:
    dense, cosine-biased Fourier components, unlike addition's sparse ones."""
    summary = run(compose_cfg(["logger=none", "task=mul", "model=furuta", "frac=0.5",
                               "train.steps=2000", "train.early_stop_after=null"]), tmp_path)
    m = pd.read_json(tmp_path / "metrics.jsonl", lines=True, precise_float=True)
    assert summary["verdict"] == "grokked"
    assert (m.ffs_embed >= 0.9).all() and (m.ffs_wl >= 0.9).all()
    assert m.fcr_wl.iloc[-1] < m.fcr_wl.iloc[0] - 0.1
    assert m.fcr_embed.iloc[-1] < m.fcr_embed.iloc[0] - 0.1


def test_a_resumed_run_logs_to_the_same_wandb_run(tmp_path):
    from grok.wandb_offline import find_run_files, read_run, wait_until_finished

    run(compose_cfg([*TINY, "train.steps=40"]), tmp_path)
    run(compose_cfg([*TINY, "train.steps=60"]), tmp_path)  # resumes from the finished checkpoint
    files = find_run_files(tmp_path)
    for f in files:
        wait_until_finished(f)
    runs = [read_run(f) for f in files]
    assert len({r["run_id"] for r in runs}) == 1
    steps = sorted(h["_step"] for r in runs for h in r["history"])
    assert steps == [0, 10, 20, 30, 40, 50, 60]  # the second part continues, nothing logged twice


def test_a_diverging_run_stops_and_says_so(tmp_path):
    summary = run(compose_cfg(["logger=none", *TINY, "optimizer=sgd", "optimizer.lr=1e8",
                               "train.steps=1000"]), tmp_path)
    assert summary["diverged"] and summary["steps"] < 1000
    assert summary["verdict"] == "did not generalise"


def test_fixed_key_frequencies_give_the_op_losses_from_the_start(tmp_path):
    """Nanda et al. measure restricted/excluded loss with the final model's key frequencies;
    `measures.key_freqs` fixes them (a fresh model has no key frequencies of its own)."""
    run(compose_cfg(["logger=none", *TINY]), tmp_path / "current")
    run(compose_cfg(["logger=none", *TINY, "measures.key_freqs=[1,3]"]), tmp_path / "fixed")
    current, fixed = read_metrics(tmp_path / "current")[0], read_metrics(tmp_path / "fixed")[0]
    assert current["key_freqs"] == [] and "excluded_loss" not in current
    assert fixed["key_freqs"] == [] and "excluded_loss" in fixed and "restricted_loss" in fixed
    assert current["train_loss"] == fixed["train_loss"]  # the measures only observe


def test_a_run_leaves_the_process_denormal_setting_as_it_found_it(tmp_path):
    """Flushing denormals speeds training but is process-wide: later code must see IEEE floats."""
    run(compose_cfg(["logger=none", *TINY, "train.steps=10"]), tmp_path)
    assert (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() != 0.0


@pytest.mark.parametrize("task", ["add", "sort"])
def test_a_job_builds_its_task_once(tmp_path, monkeypatch, task):
    """One task per job and process: the trainer builds it and hands it to the run's check."""
    import grok.tasks

    built = []

    def counting(cfg):
        built.append(cfg.task.get("_target_"))
        return task_class(cfg)

    task_class = grok.tasks.task_class
    monkeypatch.setattr(grok.tasks, "task_class", counting)
    s = run(compose_cfg(["logger=none", *TINY, f"task={task}", "measures=off", "train.steps=10"]),
            tmp_path / "r")
    assert s["status"] == "complete"
    assert len(built) == 1


def test_a_pack_given_its_tasks_builds_none(tmp_path, monkeypatch):
    """The packed launcher hands train_pack the tasks its batch check built: no second build."""
    import grok.tasks
    from grok.checks import check
    from grok.train import train_pack

    cfgs = [compose_cfg(["logger=none", *TINY, "measures=off", "train.steps=10", f"seed={s}"])
            for s in (0, 1)]
    tasks = [check(c) for c in cfgs]
    built = []
    task_class = grok.tasks.task_class
    monkeypatch.setattr(grok.tasks, "task_class", lambda cfg: built.append(cfg) or task_class(cfg))
    results = train_pack(cfgs, [tmp_path / "a", tmp_path / "b"], tasks=tasks)
    assert [r["status"] for r in results] == ["complete", "complete"] and built == []
