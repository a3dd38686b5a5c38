"""Packed sweeps on a real SLURM through `hydra/launcher=slurm_packed`: one SLURM job per pack,
the records of single runs, and a preempted pack job that resumes bit-identical.

Same cluster, helpers and skip as tests/test_slurm.py (`sudo scripts/slurm-local.sh up`); no
fakes. The reference of each sweep is the same sweep trained locally with `hydra/launcher=packed`
and the same `max_pack`, so every run is trained in a pack of the same runs: in float32 a run
in a pack of two is not bit-identical to the same run alone (a last-bit difference in a
gradient), so a single run is no bit-for-bit reference. About a minute.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, assert_same_run, read_metrics
from test_slurm import (
    _cleanup,  # noqa: F401  (autouse: kills launch.py and scancels what a test started)
    attempts,
    cluster,
    finish,
    job_folder,
    job_id,
    job_log,
    start_sweep,
    wait_for,
)

from grok.record.identity import job_dirname

pytestmark = pytest.mark.slurm

# Small pack jobs for a small node: no GPU, one CPU, one torch thread (also in the local
# references, so results compare bit for bit), 1 GB; at most two runs a pack.
PACKED = ["hydra.launcher.max_pack=2", "train.threads=1", "logger=none"]
SLURM_PACKED = ["hydra/launcher=slurm_packed", "hydra.launcher.gpus_per_node=0",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", *PACKED]
LOCAL_PACKED = ["hydra/launcher=packed", *PACKED]
LONG = [*TINY, "train.checkpoint_every=100", "train.eval_every=100"]
RECORDS = {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt", "launch.log"}


def start_packed_reference(args, sweep):
    """The same sweep trained locally as packs (`hydra/launcher=packed`), in the background."""
    sweep.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "-m", *LOCAL_PACKED, *args,
                             f"hydra.sweep.dir={sweep}"], cwd=sweep.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_reference(proc, timeout=300):
    rc, out, err = finish(proc, timeout)
    assert rc == 0, err[-3000:]
    return out + err


def array_states(array_id, timeout=30):
    """sacct's state of every task of the job array, once none is still running."""
    deadline = time.time() + timeout
    while True:
        r = subprocess.run(["sacct", "-j", array_id, "-X", "-n", "-P", "-o", "JobID,State"],
                           capture_output=True, text=True, timeout=30)
        states = dict(line.split("|")[:2] for line in r.stdout.split())
        if states and not set(states.values()) & {"RUNNING", "PENDING", "COMPLETING", "REQUEUED"} \
                or time.time() > deadline:
            return states
        time.sleep(0.5)


def run_dirs(sweep):
    return sorted(p for p in sweep.iterdir() if (p / "config.yaml").exists())


@cluster
@pytest.mark.slow
def test_packed_sweep_on_slurm_runs_one_job_per_pack_and_matches_local_packs(tmp_path):
    t0 = time.time()
    sweep_args = ["task=poly", "op=x+y,x-y", "frac=0.5", "seed=0,1", *TINY]
    reference = start_packed_reference(sweep_args, tmp_path / "reference" / "sweep")
    proc, sweep = start_sweep([*SLURM_PACKED, *sweep_args], tmp_path)
    rc, out, err = finish(proc, 300)
    assert rc == 0, err[-3000:]
    assert "4 job(s) in 2 SLURM pack job(s)" in out + err
    assert "4 of 4 jobs complete" in err
    assert "4 jobs in 2 packs" in finish_reference(reference)

    runs = run_dirs(sweep)
    assert {p.name for p in runs} == {job_dirname(["task=poly", f"op={op}", "frac=0.5", f"seed={s}", *TINY])
                                      for op in ("x+y", "x-y") for s in (0, 1)}
    seen = set()
    for run in runs:
        assert RECORDS <= {p.name for p in run.iterdir()}
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["steps"] == 60
        assert summary["resumed_from"] is None
        assert [m["step"] for m in read_metrics(run)] == list(range(0, 61, 10))
        # the run's own lines in its own launch.log, none of the other runs'
        log = (run / "launch.log").read_text()
        assert "pack of 2 runs" in log and f"{run}: " in log
        assert not any(f"{other}: " in log for other in runs if other != run)
        seen.add((summary["op"], summary["seed"]))
        assert_same_run(tmp_path / "reference" / "sweep" / run.name, run)
    assert seen == {("x+y", 0), ("x+y", 1), ("x-y", 0), ("x-y", 1)}

    # two pack jobs (array tasks <id>_0 and <id>_1), not one per run
    jid = job_id(sweep).split("_")[0]
    tasks = sorted(p.name for p in (sweep / ".submitit").glob(f"{jid}_*") if p.is_dir())
    assert tasks == [f"{jid}_0", f"{jid}_1"]
    assert all((sweep / ".submitit" / t / f"{t}_0_log.out").exists() for t in tasks)
    assert array_states(jid) == {f"{jid}_0": "COMPLETED", f"{jid}_1": "COMPLETED"}
    print(f"4 runs in 2 pack jobs on SLURM, same as local packs: {time.time() - t0:.1f} s")


@cluster
@pytest.mark.slow
def test_preempted_pack_job_is_requeued_and_every_run_ends_bit_identical(tmp_path):
    """`scancel --signal=USR2` (what SLURM sends before preemption) to a pack job of two runs:
    every run checkpoints the same exact step, submitit requeues the job, the job resumes every
    run from its checkpoint."""
    t0 = time.time()
    sweep_args = [*LONG, "train.steps=3000", "task=poly", "op=x+y", "frac=0.5", "seed=0,1"]
    reference = start_packed_reference(sweep_args, tmp_path / "reference" / "sweep")
    proc, sweep = start_sweep([*SLURM_PACKED, *sweep_args], tmp_path)
    jid = job_id(sweep)
    wait_for(job_folder(sweep, [*sweep_args[:-1], "seed=0"]) / "checkpoint.pt")
    subprocess.run(["scancel", "--signal=USR2", jid], check=True, timeout=30)
    rc, out, err = finish(proc, 300)
    assert rc == 0, err[-3000:]
    assert "2 job(s) in 1 SLURM pack job(s)" in out + err
    assert "2 of 2 jobs complete" in err
    assert "2 jobs in 1 pack" in finish_reference(reference)

    runs = run_dirs(sweep)
    assert len(runs) == 2
    resumed = set()
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["steps"] == 3000
        assert 0 < (summary["resumed_from"] or 0) < 3000, "the job was not interrupted"
        resumed.add(summary["resumed_from"])
        log = (run / "launch.log").read_text()
        assert "received SIGUSR2: checkpointed" in log
        assert f"{run}: resuming from step {summary['resumed_from']}" in log
        assert_same_run(tmp_path / "reference" / "sweep" / run.name, run)
    assert len(resumed) == 1, f"the runs of the pack checkpointed different steps: {resumed}"
    log = job_log(sweep, jid)
    assert "this job is preempted" in log and re.search("requeue", log, re.I), log[-3000:]
    states = attempts(jid)
    assert states[:-1] == ["REQUEUED"] and states[-1] == "COMPLETED", states
    print(f"pack of 2 preempted at step {resumed.pop()}, requeued, resumed: {time.time() - t0:.1f} s")
