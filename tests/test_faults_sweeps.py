"""Nothing lost, nothing counted that should not be: a dead job of a local pool is one failed job
of its sweep, and analysis skips a bad run folder (saying which and why) instead of stopping."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY

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
    """3 jobs, 2 at once: job 0 (a long run) is killed mid-training. The other two finish, the
    dead one's folder says it failed and why, and the report lists all three (exit status 1)."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "-m", "hydra/launcher=pool", "hydra.launcher.n_jobs=2",
         *TINY, "train.steps=100000,60,70", "logger=none", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        dead = kill_job_when_training(sweep, "train.steps=100000", proc.pid)
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
            assert summary["steps"] in (60, 70)
    assert "2 of 3 jobs complete" in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip().startswith(tuple(p.name for p in jobs))]
    failed = [line for line in lines if " failed " in line]
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
    ret = launcher._died("killed by signal 9 (SIGKILL)", 7, ["seed=1"])
    assert ret.return_value == done
    assert json.loads((run / "summary.json").read_text()) == done
    ret = launcher._died("killed by signal 9 (SIGKILL)", 8, ["seed=2"])  # no record yet: failed
    failed = json.loads((tmp_path / "8" / "summary.json").read_text())
    assert failed["status"] == "failed" and "killed by signal 9" in failed["error"]
    with pytest.raises(RuntimeError, match="worker died"):
        ret.return_value
