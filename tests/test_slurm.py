"""The sweep on a real SLURM through `hydra/launcher=slurm`: records, preemption, time limits, failures.

Needs a SLURM that answers (`sudo scripts/slurm-local.sh up` brings up a single-node one on this
machine, accounting included: without it submitit cannot see a job's state); skipped otherwise.
No fakes: sbatch, scancel, sacct and the job's own python, as on a cluster. About two minutes.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, assert_same_run, compose_cfg, launch, read_metrics

from grok.record.identity import job_dirname


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) here: run `sudo scripts/slurm-local.sh up`"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s"
    states = r.stdout.split()
    if r.returncode or not any(s.rstrip("*~#!%$@^-") in ("idle", "mixed", "allocated", "completing")
                               for s in states):
        return f"no SLURM node up (sinfo: {(r.stdout + r.stderr).strip()[:200]!r})"
    return None


_PROBLEM = _cluster_problem()
pytestmark = pytest.mark.slurm
cluster = pytest.mark.skipif(_PROBLEM is not None, reason=f"SLURM: {_PROBLEM}")

# Small jobs for a small node: one CPU each, one torch thread (also in the local reference runs,
# so results compare bit for bit), 1 GB.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "train.threads=1", "logger=none"]
LONG = [*TINY, "train.checkpoint_every=100", "train.eval_every=100"]


def start_reference(args, out):
    """The uninterrupted local run of the same config, in the background."""
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, f"hydra.run.dir={out}"],
                            cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


_started: list = []  # (process, sweep dir) of this test, stopped and scancelled at its end


@pytest.fixture(autouse=True)
def _cleanup():
    yield
    while _started:
        proc, sweep = _started.pop()
        if proc.poll() is None:
            proc.kill()
        ids = [p.name for p in (sweep / ".submitit").glob("*") if re.fullmatch(r"\d+(_\d+)?", p.name)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def start_sweep(args, tmp_path):
    """launch.py -m on SLURM in the background; returns (process, sweep dir)."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "-m", *args,
                             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started.append((proc, sweep))
    return proc, sweep


def job_id(sweep, timeout=60):
    """The SLURM id of job 0 of the sweep, from its submitit folder: `<id>` for a one-job sweep
    (submitted alone), `<array id>_0` for a bigger one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [p.name for p in (sweep / ".submitit").glob("*")
                 if re.fullmatch(r"\d+(_0)?", p.name) and p.is_dir()]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no job folder under {sweep}/.submitit after {timeout} s")


def job_log(sweep, jid):
    """The job's stderr, where submitit logs signals and requeues (appended to on every start)."""
    return (sweep / ".submitit" / jid / f"{jid}_0_log.err").read_text()


def job_folder(sweep, args):
    """The folder of the sweep job with these command-line overrides (grok.record.identity)."""
    return sweep / job_dirname([a for a in args if not a.startswith("hydra")])


def wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def attempts(jid, timeout=30):
    """sacct's record of every start of the job, once it has ended: one state per start,
    REQUEUED for each requeue. (The launch returns when the result is written, a moment before
    SLURM marks the job COMPLETED.)"""
    deadline = time.time() + timeout
    while True:
        r = subprocess.run(["sacct", "-j", jid, "--duplicates", "-X", "-n", "-P", "-o", "State"],
                           capture_output=True, text=True, timeout=30)
        states = r.stdout.split()
        if states and states[-1] not in ("RUNNING", "PENDING", "COMPLETING", "REQUEUED") \
                or time.time() > deadline:
            return states
        time.sleep(0.5)


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"launch.py still running after {timeout} s:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def test_launcher_configs_compose_and_need_nothing_in_the_primary_config():
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        for name, target in [("slurm", "SlurmLauncher"), ("local", "LocalLauncher"),
                             ("pool", "PoolLauncher")]:
            cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
            if name == "pool":
                assert cfg.hydra.launcher.n_jobs == 2
        slurm = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        assert slurm.hydra.launcher.max_num_timeout >= 1  # a USR2 with timeout_min < 10 is a timeout
    assert compose_cfg(["hydra/launcher=slurm"]) == compose_cfg()
    r = launch(["-m", "hydra/launcher=slurm", "task=poly", "op=x+y,x-y", "frac=0.5,0.7",
                "--dry-run"], cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "4 job(s)" in r.stdout, r.stderr


@cluster
@pytest.mark.slow
def test_sweep_on_slurm_leaves_complete_records_that_collate(tmp_path):
    t0 = time.time()
    proc, sweep = start_sweep([*SLURM, "task=poly", "op=x+y,x-y", "frac=0.5,0.7", *TINY], tmp_path)
    rc, _, err = finish(proc, 300)
    assert rc == 0, err[-3000:]
    assert "4 of 4 jobs complete" in err
    runs = sorted(p for p in sweep.iterdir() if (p / "config.yaml").exists())
    assert {p.name for p in runs} == {job_dirname(["task=poly", f"op={op}", f"frac={f}", *TINY])
                                      for op in ("x+y", "x-y") for f in (0.5, 0.7)}
    seen = set()
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["steps"] == 60
        assert [m["step"] for m in read_metrics(run)] == list(range(0, 61, 10))
        assert f"frac: {summary['frac']}" in (run / "config.yaml").read_text()
        assert (run / "launch.log").stat().st_size > 0
        seen.add((summary["op"], summary["frac"]))
    assert seen == {("x+y", .5), ("x+y", .7), ("x-y", .5), ("x-y", .7)}
    jid = job_id(sweep).split("_")[0]
    assert len(list((sweep / ".submitit").glob(f"{jid}_*/{jid}_*_0_log.out"))) == 4

    from analysis.collate import load_runs

    table, problems = load_runs(sweep)
    assert len(table) == 4 and problems == []
    r = subprocess.run([sys.executable, "-m", "analysis", "grid", str(sweep), "--out",
                        str(tmp_path / "analysis")], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 runs" in r.stdout and "skipped" not in r.stderr
    print(f"4-job sweep on SLURM: {time.time() - t0:.1f} s")


@cluster
@pytest.mark.slow
def test_preempted_job_is_requeued_and_ends_bit_identical(tmp_path):
    """`scancel --signal=USR2` is what SLURM sends before preemption: the run checkpoints its exact
    step, submitit requeues the job, the job resumes from the checkpoint."""
    t0 = time.time()
    args = [*SLURM, *LONG, "train.steps=3000"]
    reference = start_reference([a for a in args if not a.startswith("hydra")], tmp_path / "reference")
    proc, sweep = start_sweep(args, tmp_path)
    jid = job_id(sweep)
    run_dir = job_folder(sweep, args)
    wait_for(run_dir / "checkpoint.pt")
    subprocess.run(["scancel", "--signal=USR2", jid], check=True, timeout=30)
    rc, _, err = finish(proc, 300)
    assert rc == 0, err[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < (summary["resumed_from"] or 0) < 3000, "the job was not interrupted"
    log = job_log(sweep, jid)
    assert "this job is preempted" in log and re.search("requeue", log, re.I), log[-3000:]
    states = attempts(jid)
    assert states[:-1] == ["REQUEUED"] and states[-1] == "COMPLETED", states
    assert_same_run(tmp_path / "reference", run_dir)
    print(f"preempted at step {summary['resumed_from']}, requeued, resumed: {time.time() - t0:.1f} s")


@cluster
@pytest.mark.slow
def test_job_past_its_time_limit_is_requeued_and_ends_bit_identical(tmp_path):
    """timeout_min=1: SLURM sends USR2 (--signal=USR2@signal_delay_s) before the limit, at its
    next 30 s time-limit pass; each requeued attempt gets about 15 s. The run is sized from this
    machine's speed to need about 35 s of training, so it is cut at least once, whatever the CPU.
    The reference run shares the CPU with the job, so the job may be cut several times: room for 10."""
    t0 = time.time()
    calib = launch([*LONG, "logger=none", "train.threads=1", "train.steps=2000",
                    f"hydra.run.dir={tmp_path / 'calib'}"], cwd=tmp_path, timeout=120)
    assert calib.returncode == 0, calib.stderr
    speed = json.loads((tmp_path / "calib" / "summary.json").read_text())["steps_per_s"]
    steps = int(speed * 35) // 100 * 100
    args = [*SLURM, *LONG, f"train.steps={steps}", "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=25", "hydra.launcher.max_num_timeout=10"]
    reference = start_reference([a for a in args if not a.startswith("hydra")], tmp_path / "reference")
    proc, sweep = start_sweep(args, tmp_path)
    jid = job_id(sweep)
    rc, _, err = finish(proc, 420)
    assert rc == 0, err[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    run_dir = job_folder(sweep, args)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps and (summary["resumed_from"] or 0) > 0
    log = job_log(sweep, jid)
    timeouts = log.count("this job is timed-out")
    assert timeouts >= 1, log[-3000:]
    states = attempts(jid)
    assert states[:-1] == ["REQUEUED"] * timeouts and states[-1] == "COMPLETED", states
    assert_same_run(tmp_path / "reference", run_dir)
    print(f"{steps} steps at {speed:.0f} steps/s, {timeouts} time-out(s), requeued, resumed: "
          f"{time.time() - t0:.1f} s")


@cluster
@pytest.mark.slow
def test_failing_job_on_slurm_does_not_stop_the_sweep_and_is_reported(tmp_path):
    """Job seed=0 finds a corrupt checkpoint in its folder (a fault no up-front check can see)."""
    bad, good = (job_folder(tmp_path / "sweep", [f"seed={s}", *TINY]) for s in (0, 1))
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    proc, sweep = start_sweep([*SLURM, "seed=0,1", *TINY, "train.steps=20"], tmp_path)
    rc, _, err = finish(proc, 300)
    assert rc != 0
    failed = json.loads((bad / "summary.json").read_text())
    assert failed["status"] == "failed" and "checkpoint" in failed["error"]
    assert "Traceback" in (bad / "launch.log").read_text()
    assert json.loads((good / "summary.json").read_text())["status"] == "complete"
    assert "1 of 2 jobs complete" in err
    assert f"failed      {bad.name}: {failed['error']} (log: {bad}/launch.log)" in err
