"""W&B that groups itself: logged keys under sections (one mapping, read back both ways), each
run's launch.log among its files, a sweep's offline runs in one folder that `wandb sync` and
`wandb leet` find, and `--wandb` without an API key as one line."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, TINY, assert_logged, compose_cfg, launch, read_metrics, wandb_files

from analysis.collate import from_wandb
from grok.train import run
from grok.wandb_offline import read_run, wait_until_finished
from grok.wandb_view import record_name, summary_key, wandb_key

RECORDS = ROOT / "tests" / "fixtures" / "records"
WANDB = Path(sys.executable).parent / "wandb"  # the wandb CLI of this Python's environment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_record_key_has_a_section_and_maps_back():
    rows = [json.loads(line) for f in RECORDS.rglob("metrics.jsonl") for line in f.read_text().splitlines()]
    keys = {k for r in rows for k in r} | {"test_acc/digit0", "train_loss/pos3", "test_acc/x+y",
                                           "key_freqs/x+y", "restricted_loss/x/y"}
    ops = ("x+y", "x/y")
    for key in keys:
        w = wandb_key(key, ops)
        assert record_name(w) == key
        assert w == "step" or w.split("/")[0] in ("train", "test", "measures", "ops", "positions"), w
    assert [wandb_key(k, ops) for k in ("train_acc", "test_loss", "lr", "gini_embed", "weight_sq/W_E",
                                        "test_acc/x+y", "restricted_loss/x/y", "test_acc/digit0")] == \
        ["train/acc", "test/loss", "train/lr", "measures/gini_embed", "measures/weight_sq/W_E",
         "ops/test_acc/x+y", "ops/restricted_loss/x/y", "positions/test_acc/digit0"]
    summary = json.loads(next(RECORDS.rglob("summary.json")).read_text())
    assert summary_key("best_test_acc") == "test/best_acc" and summary_key("verdict") == "verdict"
    assert {record_name(summary_key(k)) for k in summary} == set(summary)
    for old in ("train_acc", "test_acc", "best_test_acc", "gini_embed", "test_acc/x+y"):
        assert record_name(old) == old  # a run logged before the sections reads as it was


def test_from_wandb_reads_runs_logged_with_and_before_sections():
    config = {"op": "x+y", "p": 97, "frac": 0.5, "seed": 0, "task": {"name": "poly"},
              "model": {"name": "nanda"}, "optimizer": {"name": "adamw"}, "sweep_id": "s"}
    summary = {"status": "complete", "verdict": "grokked", "grok_step": 900, "memorisation_step": 100,
               "best_test_acc": 0.99, "final_test_acc": 0.98, "steps": 1000}
    new = {summary_key(k): v for k, v in summary.items()}
    assert "test/best_acc" in new and "best_test_acc" not in new

    class Api:
        def runs(self, path, filters=None):
            return [SimpleNamespace(id="old", config=config, summary=summary),
                    SimpleNamespace(id="new", config={**config, "seed": 1}, summary=new)]

    df = from_wandb("me/grok", api=Api())
    assert list(df.run) == ["wandb:me/grok/old", "wandb:me/grok/new"]
    assert list(df.best_test_acc) == [0.99, 0.99] and list(df.final_test_acc) == [0.98, 0.98]


@pytest.mark.parametrize("cmd", ["grid", "exponents"])
def test_wandb_option_without_an_api_key_is_one_line_and_status_2(cmd, tmp_path, monkeypatch, capsys):
    from analysis.__main__ import main

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))      # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(SystemExit) as e:
        main([cmd, "--wandb", "me/grok", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --wandb me/grok: ")
    assert "API key" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # before any work


def offline_runs(jobs) -> dict:
    """{job: (its transaction log, the run read back)}, each run finished."""
    runs = {}
    for job in jobs:
        (f,) = wandb_files(job)
        wait_until_finished(f)
        runs[job] = (f, read_run(f))
    return runs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two jobs of a sweep folder (a sweeper's multirun.yaml in it), trained in this process with
    their log lines in their launch.log as Hydra's job logging writes them."""
    sweep = tmp_path_factory.mktemp("wbsweep") / "s"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("sweep_id: s\n")
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.INFO)
    for seed in (0, 1):
        job = sweep / f"seed={seed}"
        job.mkdir()
        log = logging.FileHandler(job / "launch.log")
        root.addHandler(log)
        try:
            run(compose_cfg(["task=poly", "op=x+y", f"seed={seed}", "sweep_id=s", *TINY,
                             "train.steps=20", "logger.log_plot=false"]), job)
        finally:
            root.removeHandler(log)
            log.close()
    root.setLevel(level)
    return sweep, offline_runs(sorted(sweep.glob("seed=*")))


def check_sectioned(sweep_dir, runs):
    """Each run's W&B run in <sweep>/wandb, in the sweep's group, its keys under sections and
    its launch.log among its files."""
    for job, (f, wb) in runs.items():
        assert f.parent.parent == sweep_dir / "wandb" and not (job / "wandb").exists()
        summary = json.loads((job / "summary.json").read_text())
        assert wb["group"] == summary["sweep_id"]  # the dashboard groups by sweep
        rows = read_metrics(job)
        assert [h["_step"] for h in wb["history"]] == [r["step"] for r in rows]
        first = wb["history"][0]
        assert {"train/acc", "train/loss", "train/lr", "test/acc", "test/loss",
                "measures/gini_embed"} <= set(first)
        assert not {"train_acc", "test_acc", "lr", "gini_embed"} & set(first)
        for h, row in zip(wb["history"], rows):
            assert_logged(h, row)
        assert wb["summary"]["test/best_acc"] == summary["best_test_acc"]
        assert "launch.log" in wb["files"]
        saved = (f.parent / "files" / "launch.log").read_text()
        assert f"{job.name} step      0" in saved  # the run's own lines
        assert (job / "launch.log").read_text().startswith(saved)


def wandb_cli(*args, cwd):
    """The wandb CLI as a user runs it: no WANDB_DIR (the tests' own; it would stand for ./wandb)."""
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_DIR"}, "WANDB_SILENT": "false"}
    p = subprocess.run([str(WANDB), *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout + p.stderr


def check_cli_finds_every_run(sweep_dir, runs):
    """`wandb sync` in the sweep folder (its ./wandb) and given <sweep>/wandb: every run, checked
    offline (`--dry-run`); `wandb leet inspect` reads each run's log as wandb itself does."""
    ids = {wb["run_id"] for _, wb in runs.values()}
    for out in (wandb_cli("sync", "--dry-run", cwd=sweep_dir),
                wandb_cli("sync", "--dry-run", str(sweep_dir / "wandb"), cwd=sweep_dir.parent)):
        assert f"Would sync {len(ids)} run(s)" in out
        assert {i for i in ids if f"run-{i}.wandb" in out} == ids
    f, wb = runs[max(runs)]
    got = json.loads(wandb_cli("leet", "inspect", "--summary", "--json", str(f.parent), cwd=sweep_dir))
    assert got["run_id"] == wb["run_id"] and "test/acc" in got["summary"]


def test_a_sweeps_offline_runs_have_sectioned_keys_and_launch_log(sweep):
    check_sectioned(*sweep)


def test_the_sweeps_wandb_folder_is_no_run_to_analysis(sweep):
    """W&B's copies of config.yaml and summary.json in <sweep>/wandb/*/files are no runs."""
    from analysis.collate import load_runs

    sweep_dir, runs = sweep
    assert list((sweep_dir / "wandb").glob("offline-run-*/files/summary.json"))
    df, problems = load_runs(sweep_dir)
    assert sorted(df.run) == sorted(str(job) for job in runs) and problems == []


def test_wandb_sync_and_leet_from_the_sweep_folder_find_every_run(sweep):
    check_cli_finds_every_run(*sweep)


@pytest.mark.slow
def test_a_launched_sweep_keeps_its_wandb_runs_together(tmp_path):
    """The same through launch.py: Hydra's launch.log, the sweep folder Hydra names."""
    sweep = tmp_path / "sweep"
    r = launch(["-m", "task=poly", "op=x+y", "seed=0,1", *TINY, "train.steps=20",
                f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = offline_runs(sorted(p for p in sweep.iterdir() if (p / "summary.json").exists()))
    assert len(runs) == 2
    check_sectioned(sweep, runs)
    check_cli_finds_every_run(sweep, runs)


def test_a_jobs_wandb_run_is_found_in_the_sweep_folder_and_in_its_own_from_before(tmp_path):
    """A job of a sweep resumed after its W&B runs moved to <sweep>/wandb finds the part it
    logged before in <job>/wandb too (the replay reads both), oldest first; other runs' and
    wandb's latest-run link are not its."""
    from grok.tracking import run_files, wandb_root

    sweep, job = tmp_path / "s", tmp_path / "s" / "seed=0"
    for d in ("s/seed=0/wandb/offline-run-20261201_100000-abc", "s/wandb/offline-run-20261207_100000-abc",
              "s/wandb/run-20261205_100000-abc", "s/wandb/offline-run-20261207_100000-other"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / f"run-{d.rsplit('-', 1)[1]}.wandb").touch()
    (sweep / "wandb" / "latest-run").symlink_to(sweep / "wandb" / "offline-run-20261207_100000-abc")
    assert wandb_root(job) == job  # no sweeper's multirun.yaml: a single run's folder
    assert [p.parent.name for p in run_files(job, "abc")] == ["offline-run-20261201_100000-abc"]
    (sweep / "multirun.yaml").touch()
    assert wandb_root(job) == sweep
    assert [str(p.relative_to(tmp_path)) for p in run_files(job, "abc")] == [
        "s/seed=0/wandb/offline-run-20261201_100000-abc/run-abc.wandb",
        "s/wandb/run-20261205_100000-abc/run-abc.wandb",
        "s/wandb/offline-run-20261207_100000-abc/run-abc.wandb"]


def test_a_wandb_run_started_twice_in_one_second_keeps_both_parts_in_order(tmp_path):
    """W&B names a second process of the same second `...-<id>-1` (a run continued or resumed
    at once): that part is the run's too, after the first, and `-10` comes after `-2`."""
    from grok.tracking import run_files

    job = tmp_path / "run"
    names = ["offline-run-20261207_100000-abc-10", "offline-run-20261207_100000-abc",
             "offline-run-20261207_100000-abc-2", "offline-run-20261207_100000-abc-1",
             "offline-run-20261207_095959-abc-3", "offline-run-20261207_100000-abcd",
             "offline-run-20261207_100000-abc-x"]
    for n in names:
        (job / "wandb" / n).mkdir(parents=True)
        (job / "wandb" / n / f"run-{n.split('-')[3]}.wandb").touch()
    assert [p.parent.name for p in run_files(job, "abc")] == [
        "offline-run-20261207_095959-abc-3", "offline-run-20261207_100000-abc",
        "offline-run-20261207_100000-abc-1", "offline-run-20261207_100000-abc-2",
        "offline-run-20261207_100000-abc-10"]


def test_a_continued_job_appends_to_its_wandb_run_in_the_sweep_folder(tmp_path):
    sweep, job = tmp_path / "s", tmp_path / "s" / "seed=0"
    job.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("sweep_id: s\n")
    args = ["task=poly", "op=x+y", "sweep_id=s", *TINY, "measures=off", "logger.log_plot=false"]
    run(compose_cfg([*args, "train.steps=20"]), job)
    run(compose_cfg([*args, "train.steps=30"]), job)  # continues the finished run
    files = wandb_files(job)
    assert len(files) == 2 and {f.parent.parent for f in files} == {sweep / "wandb"}
    for f in files:
        wait_until_finished(f)
    runs = [read_run(f) for f in files]
    assert len({r["run_id"] for r in runs}) == 1
    assert sorted(h["_step"] for r in runs for h in r["history"]) == [0, 10, 20, 30]
