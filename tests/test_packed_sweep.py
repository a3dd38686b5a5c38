"""`hydra/launcher=packed` end to end: a sweep trained as packs leaves exactly the records of
single runs (files, keys, W&B runs), and in float64 the same results as the basic launcher."""

import json
import math
from pathlib import Path

import pytest
from conftest import TINY, assert_logged, launch, read_metrics, wandb_files

from grok.wandb_offline import read_run, wait_until_finished

SWEEP = ["task=poly", "op=x+y,x-y,xy", "frac=0.5,0.7", "seed=0,1", *TINY, "train.steps=100",
         "train.dtype=float64", "measures.full_every=2"]
VOLATILE = {"wall_time_s", "steps_per_s", "sweep_id"}


def sweep(tmp_path, name, *extra):
    cwd = tmp_path / name
    cwd.mkdir()
    r = launch(["-m", *SWEEP, *extra], cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep_dir,) = (cwd / "outputs" / "sweeps").iterdir()
    return sweep_dir, r


def files(job: Path) -> set[str]:
    return {str(p.relative_to(job)) for p in job.rglob("*") if "wandb" not in p.parts}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    packed, log = sweep(tmp, "packed", "hydra/launcher=packed", "hydra.launcher.max_pack=5")
    basic, _ = sweep(tmp, "basic")
    return packed, basic, log


@pytest.mark.slow
def test_packed_sweep_leaves_the_records_of_single_runs(sweeps):
    packed, basic, log = sweeps
    jobs = sorted(p for p in packed.iterdir() if (p / "config.yaml").exists())
    assert len(jobs) == 12
    assert "12 of 12 jobs complete" in log.stderr
    assert "12 jobs in 3 packs" in log.stdout + log.stderr  # packs of at most 5
    for job in jobs:
        twin = basic / job.name
        assert files(job) == files(twin) >= {"config.yaml", "metrics.jsonl", "summary.json",
                                             "checkpoint.pt", "launch.log", ".hydra/config.yaml"}
        assert (job / "config.yaml").read_text().replace(packed.name, "") == \
            (twin / "config.yaml").read_text().replace(basic.name, "")
        a, b = (json.loads((d / "summary.json").read_text()) for d in (job, twin))
        assert a.keys() == b.keys() and a["status"] == "complete"
        assert a["sweep_id"] == packed.name
        # W&B: one run per job in the sweep's group, the local record's metrics
        (f,) = wandb_files(job)
        wait_until_finished(f)
        w = read_run(f)
        assert w["config"]["sweep_id"] == packed.name
        history = {h["_step"]: h for h in w["history"]}
        for row in read_metrics(job):
            assert_logged(history[row["step"]], row)
        # the run's own lines are in its own launch.log
        assert f"{job.name}: " in (job / "launch.log").read_text()


@pytest.mark.slow
def test_packed_sweep_matches_the_basic_launcher_in_float64(sweeps):
    packed, basic, _ = sweeps
    for job in (p for p in packed.iterdir() if (p / "config.yaml").exists()):
        a, b = (json.loads((d / "summary.json").read_text()) for d in (job, basic / job.name))
        assert {k: v for k, v in a.items() if k not in VOLATILE} == \
            {k: v for k, v in b.items() if k not in VOLATILE} or \
            (a["verdict"] == b["verdict"] and a["steps"] == b["steps"])
        ra, rb = read_metrics(job), read_metrics(basic / job.name)
        assert [r.keys() for r in ra] == [r.keys() for r in rb]
        for x, y in zip(ra, rb):
            # A neuron's frequency is an argmax, and at init near-ties flip on 1e-16 differences;
            # key_freqs (frequencies holding > 85% of a neuron's variance) are compared exactly.
            assert x.get("key_freqs") == y.get("key_freqs")
            for k, v in x.items():
                if k in ("neuron_freq", "key_freqs"):
                    continue
                vals = zip(v, y[k]) if isinstance(v, list) else [(v, y[k])]
                for u, w in vals:
                    assert math.isclose(u, w, rel_tol=1e-6, abs_tol=1e-6), (job.name, k)


@pytest.mark.slow
def test_grid_table_of_a_packed_sweep(sweeps, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    packed, _, _ = sweeps
    r = subprocess.run([sys.executable, "-m", "analysis", "grid", str(packed)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for op in ("x+y", "x-y", "xy"):
        assert op in r.stdout
    assert "0.5" in r.stdout and "0.7" in r.stdout


def test_packs_group_by_shape_sort_by_frac_and_respect_the_cap():
    from conftest import compose_cfg

    from grok.checks import check
    from hydra_plugins.grok_launchers.packed_launcher import default_max_pack, plan_packs

    def cfg(*o):  # (config, task), as the launchers' batch check returns them
        c = compose_cfg(["experiment=furuta", "task=poly", *o])
        return c, check(c)

    cfgs = [cfg("frac=0.9", "seed=0"), cfg("frac=0.3", "seed=1"), cfg("frac=0.5", "seed=2"),
            cfg("frac=0.3", "seed=3", "p=89"), cfg("frac=0.3", "seed=4", "optimizer=adam"),
            cfg("frac=0.3", "seed=5")]
    packs = plan_packs(cfgs, max_pack=2)
    assert sorted(i for p in packs for i in p) == list(range(6))
    assert [1, 5] in packs and [2, 0] in packs  # p=97 adamw, smallest fracs first, two per pack
    assert [3] in packs and [4] in packs       # another p, another optimizer kind: own packs
    # The CPU default: 16 runs a pack (their forward runs in cache-sized chunks, test_pack.py).
    auto = plan_packs([cfg("frac=0.3", f"seed={s}") for s in range(17)] + [cfg("frac=0.9")], None)
    assert [len(p) for p in auto] == [16, 2] and default_max_pack(*cfg()) == 16
