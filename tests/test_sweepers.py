"""Sweeps through Hydra's public extension points: the grok sweeper's glob(), a search sweeper
(optuna) with `optimized_metric`, the launchers' batch check, one sweep_id per launch."""

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY, launch

FAST = [*TINY, "train.steps=20", "logger=none", "measures=off"]


def jobs_of(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_glob_over_a_group_dry_runs_every_job_then_runs_them(tmp_path):
    args = ["-m", "optimizer=glob(adam*)", *FAST]
    dry = launch(["--dry-run", *args], tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    listed = [line for line in dry.stdout.splitlines() if line.startswith("  ")]
    assert len(listed) == 2 and "optimizer=adam " in listed[0] and "optimizer=adamw " in listed[1]
    assert "2 job(s), every config valid; nothing run" in dry.stdout
    assert not (tmp_path / "outputs").exists()
    r = launch(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (sweep,) = (tmp_path / "outputs/sweeps").iterdir()
    runs = jobs_of(sweep)
    assert [json.loads((d / "summary.json").read_text())["status"] for d in runs] == ["complete"] * 2
    assert {yaml.safe_load((d / "config.yaml").read_text())["optimizer"]["name"] for d in runs} \
        == {"adam", "adamw"}
    assert (sweep / "multirun.yaml").exists()


def test_glob_excluding_a_choice_lists_every_other_optimizer(tmp_path):
    from conftest import CONF

    r = launch(["--dry-run", "-m", "optimizer=glob(*,exclude=sgd)", *FAST], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    want = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml") if p.stem != "sgd")
    assert f"{len(want)} job(s), every config valid" in r.stdout
    for name in want:
        assert f"optimizer={name} " in r.stdout


@pytest.mark.slow  # ~15 s
def test_optuna_runs_four_trials_and_reports_the_best_objective(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    r = launch(["-m", *FAST, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
                "hydra.sweeper.n_jobs=2", "hydra.sweeper.direction=maximize",
                "hydra.sweeper.sampler.seed=0", "optimized_metric=best_test_acc",
                "optimizer.lr=interval(1e-3,1e-2)", "seed=choice(0,1)"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs/sweeps").iterdir()
    runs = jobs_of(sweep)
    accs = [json.loads((d / "summary.json").read_text())["best_test_acc"] for d in runs]
    assert 1 <= len(runs) <= 4  # two trials may draw the same point: one folder
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(accs))
    assert f"Best value: {best['best_value']}" in r.stdout + r.stderr


@pytest.mark.slow  # ~10 s each
@pytest.mark.parametrize("launcher", ["sequential", "packed", "pool"])
def test_a_search_that_proposes_one_point_twice_in_a_batch_trains_it_once(tmp_path, launcher):
    """Optuna over two choices, two trials a batch: the same point twice in one batch is one
    run (one folder), and both trials get its objective; later batches find it finished."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    r = launch(["-m", *FAST, "hydra/sweeper=optuna", f"hydra/launcher={launcher}",
                "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0",
                "hydra.sweeper.direction=maximize", "optimized_metric=best_test_acc",
                "optimizer.lr=choice(1e-3,3e-3)"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs/sweeps").iterdir()
    runs = jobs_of(sweep)
    assert [d.name.split("optimizer.lr=")[1].split(",")[0] for d in runs] == ["0.001", "0.003"]
    accs = [json.loads((d / "summary.json").read_text())["best_test_acc"] for d in runs]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(accs))


def test_a_search_sweeper_without_optimized_metric_is_one_line(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    r = launch(["-m", *FAST, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                "optimizer.lr=interval(1e-3,1e-2)"], tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "set optimized_metric to one of best_test_acc" in line
    assert not any((tmp_path / "outputs/sweeps").glob("*/*/summary.json"))  # no job ran


def test_objective_is_the_named_metric_and_a_run_that_did_not_grok_returns_its_budget():
    from conftest import compose_cfg

    from hydra_plugins.grok_launchers._batch import objective

    summary = {"best_test_acc": 0.25, "grok_step": None, "verdict": "did not generalise"}
    assert objective(compose_cfg(), summary) is summary  # optimized_metric=null: the summary
    assert objective(compose_cfg(["optimized_metric=best_test_acc"]), summary) == 0.25
    budget = compose_cfg(["optimized_metric=grok_step", "train.steps=777"])
    assert objective(budget, summary) == 777.0
    assert objective(budget, {**summary, "grok_step": 300}) == 300.0
    assert math.isnan(objective(compose_cfg(["optimized_metric=memorisation_step"]), {}))


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
@pytest.mark.parametrize("key", ["trian.steps=10", "+trian.steps=10"])
def test_unknown_key_gets_did_you_mean_with_or_without_plus(tmp_path, key, multirun):
    r = launch([*(["-m", "seed=0,1"] if multirun else []), key, "logger=none"], tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == \
        "error: trian.steps=10: unknown key (did you mean train.steps?)", r.stderr
    assert "use +" not in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_optimized_metric_must_be_a_known_metric(tmp_path):
    r = launch(["--dry-run", "optimized_metric=best_acc"], tmp_path, timeout=60)
    assert r.returncode == 2 and "optimized_metric=best_acc" in r.stderr


def test_a_bad_second_job_stops_the_batch_before_the_first_runs(tmp_path):
    """Hydra's own basic sweeper hands the batch to the default (project) launcher, which checks
    it all before running any job: the check is the launcher's, not only the grok sweeper's."""
    for sweeper in ("grok", "basic"):
        (tmp_path / sweeper).mkdir()
        r = launch(["-m", f"hydra/sweeper={sweeper}", *FAST, "frac=0.3,2.0"], tmp_path / sweeper,
                   timeout=60)
        assert r.returncode == 2, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1].startswith("error: frac=2.0"), r.stderr[-2000:]
        sweeps = tmp_path / sweeper / "outputs/sweeps"
        assert not sweeps.exists() or not any(jobs_of(s) for s in sweeps.iterdir())


@pytest.mark.slow  # ~20 s: a fresh process per job
def test_one_sweep_id_in_every_pool_job(tmp_path):
    r = launch(["-m", "hydra/launcher=pool", *FAST, "seed=0,1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (sweep,) = (tmp_path / "outputs/sweeps").iterdir()
    got = [yaml.safe_load((d / "config.yaml").read_text())["sweep_id"] for d in jobs_of(sweep)]
    assert got == [sweep.name] * 2  # the launch's id, in both jobs' own processes
    assert yaml.safe_load((sweep / "multirun.yaml").read_text())["sweep_id"] == sweep.name


def test_sweep_id_is_fixed_once_per_process_to_the_microsecond():
    import subprocess
    import sys

    from hydra_plugins.grok_launchers._batch import launch_id

    assert launch_id() == launch_id()
    code = "from hydra_plugins.grok_launchers._batch import launch_id; print(launch_id())"
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)}
    assert len(ids) == 2 and all(len(i.rsplit("-", 1)[1]) == 6 for i in ids)  # microseconds


def test_dry_run_of_a_search_sweeper_says_it_has_no_job_list(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    r = launch(["--dry-run", "-m", "hydra/sweeper=optuna", "optimizer.lr=interval(1e-4,1e-2)"],
               tmp_path, timeout=60)
    assert r.returncode == 2 and "chooses its jobs as it runs" in r.stderr, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and not (tmp_path / "outputs").exists()


@pytest.mark.slow  # ~15 s
def test_packed_launcher_returns_the_objective_a_run_that_did_not_grok_its_budget(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    r = launch(["-m", *FAST, "hydra/sweeper=optuna", "hydra/launcher=packed",
                "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "optimized_metric=grok_step",
                "optimizer.lr=interval(1e-4,1e-3)"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs/sweeps").iterdir()
    summaries = [json.loads((d / "summary.json").read_text()) for d in jobs_of(sweep)]
    assert summaries and all(s["grok_step"] is None for s in summaries)  # 20 steps: no grokking
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == 20.0  # the budget, train.steps


@pytest.mark.parametrize("params,args,batch", [
    ({}, ["frac=0.3,0.5", "seed=range(3)", "op=x+y"], None),
    ({"seed": "0,1", "frac": "0.3,0.5"}, ["seed=2,3,4", "p=23"], 4),
    ({}, ["optimizer=adam,adamw", "+train.extra=1", "~grok", "seed=sort(2,1)"], 3),
], ids=["grid", "params-then-line", "groups-add-del"])
def test_grid_expands_as_hydras_basic_sweeper(params, args, batch):
    """The grok sweeper's grid is Hydra's basic sweeper's: jobs, order and batches (the test may
    use Hydra's private BasicSweeper as the reference; the project does not)."""
    from conftest import CONF
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.grok_launchers.sweeper import expand

    with initialize_config_dir(str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        lines = [f"{k}={v}" for k, v in params.items()] + args
        want = BasicSweeper.split_arguments(
            OverridesParser.create(config_loader=loader).parse_overrides(lines), batch)
        assert expand(loader, params, args, batch) == want
