"""Nothing lost, nothing counted that should not be: a dead job of a local pool is one failed job
of its sweep, and analysis skips a bad run folder (saying which and why) instead of stopping."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, TINY, launch

from analysis.__main__ import main as analysis_main
from analysis.__main__ import plot_name
from analysis.collate import load_runs

# --- a job killed like the out-of-memory killer does (SIGKILL), hydra/launcher=pool ---------------


def job_folders(sweep: Path) -> list[Path]:
    """Job folders of a sweep, whatever their names: those Hydra made (`.hydra/`)."""
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def overrides_of(job: Path) -> str:
    try:
        return (job / ".hydra" / "overrides.yaml").read_text()
    except OSError:  # being written
        return ""


def pids_holding(path: Path, but=()) -> list[int]:
    """Processes with `path` open (/proc/<pid>/fd), other than `but`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in but:
            continue
        try:
            if any(os.readlink(fd) == str(path) for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def kill_job_when_training(sweep: Path, marker: str, launcher_pid: int, timeout=120) -> Path:
    """SIGKILL the process that runs the job whose overrides hold `marker`, once it has
    logged its first eval; return that job's folder."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = [j for j in job_folders(sweep) if marker in overrides_of(j)] if sweep.is_dir() else []
        if jobs and (jobs[0] / "metrics.jsonl").exists():
            pids = pids_holding((jobs[0] / "launch.log").resolve(), but={launcher_pid, os.getpid()})
            if pids:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                return jobs[0]
        time.sleep(0.05)
    raise AssertionError(f"the job with {marker} did not start training in {timeout} s")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the job's process through /proc")
def test_pool_sweep_survives_a_job_killed_by_sigkill(tmp_path):
    """3 jobs, 2 at once: the long run (threshold 1.0 never settles) is killed mid-training. The
    other two (settled at once, stopped early) finish, the dead one's folder says it failed and
    why, and the report lists all three (exit status 1)."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "-m", "hydra/launcher=pool", "hydra.launcher.n_jobs=2",
         *TINY, "train.steps=100000", "train.early_stop_after=20", "grok.threshold=1.0,0.01,0.02",
         "logger=none", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        dead = kill_job_when_training(sweep, "grok.threshold=1.0", proc.pid)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]
    jobs = job_folders(sweep)
    assert len(jobs) == 3, err[-3000:]
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        if job == dead:
            assert summary["status"] == "failed"
            assert "worker died: killed by signal 9" in summary["error"]
            assert "worker died" in (job / "launch.log").read_text()
        else:
            assert summary["status"] == "complete", (job, summary)
            assert summary["early_stopped"] and summary["steps"] < 1000
    assert "2 of 3 jobs complete" in err, err[-3000:]
    lines = [line.strip() for line in err.splitlines() if any(p.name in line for p in jobs)]
    failed = [line for line in lines if line.startswith("failed ")]
    assert len(failed) == 1 and "killed by signal 9" in failed[0], err[-3000:]


def test_pool_never_overwrites_a_complete_record_of_a_job_that_died_after_finishing(tmp_path):
    """A job whose process dies once its run is on disk (e.g. while W&B finishes) keeps its
    complete record: that job's result is the record."""
    from hydra_plugins.grok_launchers.pool_launcher import PoolLauncher

    run = tmp_path / "7"
    run.mkdir()
    done = {"status": "complete", "verdict": "grokked"}
    (run / "summary.json").write_text(json.dumps(done))
    launcher = PoolLauncher(n_jobs=1)
    launcher.job_dir = lambda num, overrides: tmp_path / str(num)
    ret = launcher._died("worker died: killed by signal 9 (SIGKILL)", 7, ["seed=1"])
    assert ret.return_value == done
    assert json.loads((run / "summary.json").read_text()) == done
    ret = launcher._died("worker died: killed by signal 9 (SIGKILL)", 8, ["seed=2"])  # no record yet: failed
    failed = json.loads((tmp_path / "8" / "summary.json").read_text())
    assert failed["status"] == "failed" and "killed by signal 9" in failed["error"]
    with pytest.raises(RuntimeError, match="worker died"):
        ret.return_value


def test_pool_job_that_raises_is_one_failed_job_with_its_error(tmp_path):
    """Job 0 finds a corrupt checkpoint (its own exception, carried back from its process)."""
    from grok.record.identity import job_dirname

    sweep = tmp_path / "sweep"
    bad, good = (sweep / job_dirname([f"seed={s}", *TINY]) for s in (0, 1))
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    r = launch(["-m", "hydra/launcher=pool", "seed=0,1", *TINY, "train.steps=20", "logger=none",
                f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    failed = json.loads((bad / "summary.json").read_text())
    assert failed["status"] == "failed" and "checkpoint" in failed["error"].lower()
    assert "Traceback" in (bad / "launch.log").read_text()
    assert json.loads((good / "summary.json").read_text())["status"] == "complete"
    assert "1 of 2 jobs complete" in r.stderr


def test_pool_job_result_survives_an_exception_that_does_not_unpickle():
    import cloudpickle
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.grok_launchers.pool_job import portable

    class Picky(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a} and {b}")

    ret = JobReturn(overrides=["seed=0"], status=JobStatus.FAILED, _return_value=Picky(1, 2))
    back = cloudpickle.loads(portable(ret))
    with pytest.raises(RuntimeError, match="Picky: 1 and 2"):
        back.return_value


# --- analysis: one bad run folder is skipped with its reason, never stops the rest ---------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A real tiny sweep of x^2+y^2: one normal run and one that diverges (lr 1e30: its train
    loss is NaN at the first eval after step 0, and the tool writes it as JSON null)."""
    root = tmp_path_factory.mktemp("faults")
    r = launch(["-m", "task=poly", "op=x2+y2", *TINY, "optimizer.lr=1e-3,1e30", "logger=none",
                f"hydra.sweep.dir={root / 'sweep'}"], cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = {json.loads((j / "summary.json").read_text())["diverged"]: j for j in job_folders(root / "sweep")}
    assert set(runs) == {False, True}
    assert '"train_loss": null' in (runs[True] / "metrics.jsonl").read_text()
    return runs[False], runs[True]


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt", ".hydra"))
    return dst


def edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def skipped_lines(err: str) -> dict:
    """{folder name: reason} from the `skipped <folder>: <why>` lines on stderr."""
    out = {}
    for line in err.splitlines():
        if line.startswith("skipped "):
            where, _, why = line[len("skipped "):].partition(": ")
            out[Path(where).name] = why
    return out


def test_plots_draw_a_diverged_run_and_skip_unreadable_metrics(two_runs, tmp_path, capsys):
    good, diverged = two_runs
    sweep = tmp_path / "sweep"
    copy_run(good, sweep / "good")
    copy_run(diverged, sweep / "diverged")                     # bare NaN, as Python's json writes
    for name, spell in (("null", "null"), ("strings", '"NaN"')):  # other writers' spellings
        d = copy_run(diverged, sweep / name)
        (d / "metrics.jsonl").write_text((d / "metrics.jsonl").read_text().replace("NaN", spell))
    inf = copy_run(diverged, sweep / "infinity")
    text = (inf / "metrics.jsonl").read_text()
    (inf / "metrics.jsonl").write_text(text.replace('"test_loss": NaN', '"test_loss": "Infinity"', 1)
                                       .replace('"lr": ', '"lr": -Infinity, "lr_": ', 1))
    torn = copy_run(good, sweep / "torn")
    text = (torn / "metrics.jsonl").read_text()
    (torn / "metrics.jsonl").write_text(text[:-len(text.splitlines()[-1]) // 2])  # killed mid-line
    (copy_run(good, sweep / "empty") / "metrics.jsonl").write_text("")
    (copy_run(good, sweep / "missing") / "metrics.jsonl").unlink()
    out = tmp_path / "out"
    analysis_main(["plots", str(sweep), "--out", str(out)])
    printed, err = capsys.readouterr()
    made = {p.name for p in out.glob("*.png")}
    runs, _ = load_runs(sweep, distinct=False)  # every copy of a run is drawn
    names = {Path(row.run).name: f"{plot_name(row)}.png" for row in runs.itertuples()}
    for name in ("good", "diverged", "null", "strings", "infinity", "torn"):
        assert names[name] in made, err                      # run_<op>_p<p>_f<frac>_s<seed>-<hash>
        assert names[name].startswith("run_x2+y2_p23_f")
        assert (out / names[name]).stat().st_size > 1000
    assert len(set(names.values())) == len(names)            # copies of one run: one file each
    skipped = skipped_lines(err)
    assert skipped == {"empty": "empty metrics.jsonl", "missing": "no metrics.jsonl"}, err
    assert f"note {sweep / 'torn'}: metrics.jsonl: left out torn last line" in err
    assert len(printed.splitlines()) == 6


def test_plots_of_one_run_folder_named_by_a_short_relative_path(two_runs, tmp_path, monkeypatch, capsys):
    """`python -m analysis plots myrun` (one folder, relative): the PNG is named, not an error."""
    copy_run(two_runs[0], tmp_path / "myrun")
    monkeypatch.chdir(tmp_path)
    analysis_main(["plots", "myrun"])
    [row] = load_runs("myrun")[0].itertuples()
    name = f"{plot_name(row)}.png"
    assert capsys.readouterr().out.strip() == f"myrun/analysis/{name}"
    assert (tmp_path / "myrun" / "analysis" / name).stat().st_size > 1000


def test_plots_of_a_torn_metrics_file_use_its_complete_lines(two_runs, tmp_path):
    from grok.figures import read_metrics

    good, _ = two_runs
    text = (good / "metrics.jsonl").read_text()
    lines = text.splitlines()
    path = tmp_path / "metrics.jsonl"
    path.write_text(text[:-10])
    notes = []
    m = read_metrics(path, notes)
    assert list(m.step) == [json.loads(line)["step"] for line in lines[:-1]]
    assert notes == ["metrics.jsonl: left out torn last line (not a complete eval)"]
    path.write_text("".join(line + "\n" for line in lines).replace("NaN", "null"))
    assert m.train_loss.tolist() == read_metrics(path).train_loss.tolist()[:-1]


def test_grid_and_exponents_skip_bad_summaries_with_the_reason(two_runs, tmp_path, capsys):
    good, _ = two_runs
    sweep = tmp_path / "sweep"
    copy_run(good, sweep / "good")
    bad = {"op": ("x+z", "bad op 'x+z'"), "frac": ("abc", "bad frac 'abc'"),
           "p": ("abc", "bad p 'abc'"), "seed": (0.5, "bad seed 0.5"),
           "verdict": ("maybe", "bad verdict 'maybe'")}
    for key, (value, _) in bad.items():
        edit_json(copy_run(good, sweep / f"bad_{key}") / "summary.json", **{key: value})
    edit_json(copy_run(good, sweep / "bad_frac_range") / "summary.json", frac=1.5)
    edit_json(copy_run(good, sweep / "bad_p_division") / "summary.json", op="x/y", p=21)
    (copy_run(good, sweep / "bare") / "summary.json").write_text('{"status": "complete"}')
    nan_strings = copy_run(good, sweep / "nan_strings")  # another seed: a copy is the same run
    edit_json(nan_strings / "summary.json", final_test_acc="NaN", seed=1,
              wall_time_s="Infinity")  # non-finite values spelled as strings: still a run
    (nan_strings / "config.yaml").write_text(
        (nan_strings / "config.yaml").read_text().replace("\nseed: 0\n", "\nseed: 1\n"))
    for cmd in ("grid", "exponents"):
        analysis_main([cmd, str(sweep), "--out", str(tmp_path / cmd)])
        printed, err = capsys.readouterr()
        skipped = skipped_lines(err)
        assert set(skipped) == {f"bad_{k}" for k in bad} | {"bad_frac_range", "bad_p_division", "bare"}
        for key, (_, why) in bad.items():
            assert skipped[f"bad_{key}"].startswith(why), skipped
        assert skipped["bad_frac_range"].startswith("bad frac 1.5")
        division = skipped["bad_p_division"]
        assert division.startswith("bad op 'x/y'") and "composite" in division
        assert skipped["bare"].startswith("incomplete summary (no verdict, best_test_acc")
        if cmd == "grid":
            assert "2 runs, 2 seed(s)" in printed
        else:
            table = pd.read_csv(tmp_path / cmd / "exponents.csv")
            assert table[["a", "b", "p", "runs"]].values.tolist() == [[2, 2, 23, 2]]
    runs, problems = load_runs(sweep)
    assert len(runs) == 2 and len(problems) == 8
    row = runs.set_index(runs.run.map(lambda r: Path(r).name)).loc["nan_strings"]
    assert math.isnan(row.final_test_acc) and math.isinf(row.wall_time_s)


def test_from_wandb_skips_bad_runs_with_the_reason():
    from types import SimpleNamespace

    from analysis.collate import from_wandb

    config = {"op": "x2+y2", "p": 97, "frac": 0.5, "seed": 0, "model": {"name": "furuta"},
              "optimizer": {"name": "adamw"}}
    summary = {"status": "complete", "verdict": "grokked", "best_test_acc": 1.0}

    class Api:
        def runs(self, path, filters=None):
            return [SimpleNamespace(id="ok", config=config, summary=summary),
                    SimpleNamespace(id="badop", config={**config, "op": "x+z"}, summary=summary),
                    SimpleNamespace(id="crashed", config=config, summary={"status": "failed"})]

    problems = []
    df = from_wandb("me/grok", api=Api(), problems=problems)
    assert list(df.run) == ["wandb:me/grok/ok"]
    assert problems[0].startswith("wandb:me/grok/badop: bad op 'x+z'")
    assert problems[1] == "wandb:me/grok/crashed: run not complete (failed)"
