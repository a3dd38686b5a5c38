"""Signals, leftovers and one run's faults (issue 20, classes 6, 7 and 10).

What a killed snapshot write left is cleared when the run starts again; SIGTERM or SIGINT while a
run writes its step-0 snapshot waits for the write and a checkpoint; a stop signal to the pool
launcher reaches every job it started, which checkpoint and exit, and the relaunch continues.
In a pack, one run's I/O fault fails that run alone, with its own error, and the others train
on as they would without it. A run's records are bit-identical alone and in a pack of other
train-set sizes.
"""

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, assert_same_run, compose_cfg, launch, read_metrics

from grok.record.checkpoint import read, snapshot_steps
from grok.record.identity import job_dirname
from grok.train import run, train_pack

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; the cores may be shared

SMALL = [*TINY, "logger=none", "train.threads=1"]


def job_dir(sweep, overrides) -> Path:
    return Path(sweep) / job_dirname(overrides)


def summary(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def snapshots_equal(a, b) -> bool:
    sa, sb = snapshot_steps(a), snapshot_steps(b)
    if sa != sb:
        return False
    for s in sa:
        wa = read(Path(a) / "snapshots" / f"step_{s:07d}.pt")["model"]
        wb = read(Path(b) / "snapshots" / f"step_{s:07d}.pt")["model"]
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


# -- 6. leftovers and signals -------------------------------------------------------------------

def test_a_killed_snapshot_writes_leftover_is_removed_when_the_run_starts_again(tmp_path):
    """`.step_*.pt.<random>.tmp` is what a snapshot write killed half-way leaves; anything else in
    snapshots/ stays."""
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    left = [snaps / ".step_0000020.pt.k2j_x9a1.tmp", snaps / ".step_0000000.pt.abcd1234.tmp"]
    kept = [snaps / "notes.tmp", snaps / ".keep"]
    for p in left + kept:
        p.write_bytes(b"half a snapshot")
    s = run(compose_cfg([*SMALL, "train.steps=20", "train.snapshot_every=10"]), tmp_path)
    assert s["status"] == "complete"
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept)
    assert snapshot_steps(tmp_path) == [0, 10, 20]


# Signals itself while its step-0 snapshot is half written (the temporary file open, nothing
# renamed yet), then goes on writing; a signal not held kills it there.
SIGNAL_MID_SNAPSHOT = """
import os, runpy, signal, sys, time
import grok.record.checkpoint as ck
real, sig = ck.atomic_write, getattr(signal, os.environ["GROK_TEST_SIGNAL"])
def atomic_write(path, write):
    def slow(f):
        if "snapshots" in str(path) and path.name == "step_0000000.pt":
            os.kill(os.getpid(), sig)
            time.sleep(0.3)
        write(f)
    real(path, slow)
ck.atomic_write = atomic_write
runpy.run_path(%r, run_name="__main__")
""" % str(ROOT / "launch.py")


@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow)])
def test_a_signal_during_the_step0_snapshot_waits_for_it_and_the_run_resumes(tmp_path, sig):
    """The snapshot is completed, the run checkpoints step 0 and ends of the signal; nothing
    half-written is left, and the relaunch ends bit-identical to a run never stopped."""
    args = [*SMALL, "train.steps=40", "train.snapshot_every=20"]
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", SIGNAL_MID_SNAPSHOT, *args, f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "GROK_TEST_SIGNAL": sig})
    assert r.returncode != 0, r.stderr[-2000:]
    if sig == "SIGTERM":
        assert r.returncode == -signal.SIGTERM, r.stderr[-2000:]
    assert not (run_dir / "summary.json").exists()
    assert not list((run_dir / "snapshots").glob(".*.tmp")), "a half-written snapshot was left"
    assert snapshot_steps(run_dir) == [0]
    assert read(run_dir / "checkpoint.pt")["step"] == 0, "no checkpoint of the exact step"
    assert f"received {sig}: checkpointed" in (run_dir / "launch.log").read_text()
    r = launch([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert launch([*args, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path).returncode == 0
    assert_same_run(tmp_path / "straight", run_dir)
    assert snapshots_equal(tmp_path / "straight", run_dir)


def lock_is_free(folder: Path) -> bool:
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def training(job: Path, step: int) -> bool:
    try:
        return f'"step": {step},' in (job / "metrics.jsonl").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def launched(args, cwd):
    """launch.py with `args` running in a session of its own (a signal to it reaches it alone,
    as `kill` sends one); at the end, whatever of it is left is killed."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever the launcher left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def wait_training(proc, jobs, step: int, timeout_s: float) -> None:
    """Until every job of `jobs` has logged `step`; the launcher's stderr if it ends first."""
    deadline = time.time() + timeout_s
    while not all(training(j, step) for j in jobs):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the jobs did not start training"
        time.sleep(0.02)


POOL = ["-m", "hydra/launcher=pool", "hydra.launcher.n_jobs=2", *SMALL, "train.steps=3000",
        "train.eval_every=100", "train.checkpoint_every=1000", "seed=0,1,2"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_pool_launcher_stops_every_job_and_the_relaunch_continues(
        tmp_path, monkeypatch, sig):
    """3 jobs, 2 at once: the signal goes to the launcher only (as `kill` sends it). Both running
    jobs checkpoint their exact step and exit, the third never starts, no job holds its folder,
    the launcher's temporary folder is gone, and the same command relaunched finishes all three,
    the two stopped ones resumed where they stopped."""
    sweep, tmp = tmp_path / "sweep", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # where the pool makes its grok-pool-* folder
    jobs = [job_dir(sweep, [*POOL[3:-1], f"seed={s}"]) for s in range(3)]
    with launched([*POOL, f"hydra.sweep.dir={sweep}"], tmp_path) as proc:
        wait_training(proc, jobs[:2], 200, timeout_s=120)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=90)
        time.sleep(0.5)  # a job that outlived its launcher would still be training now
        assert all(lock_is_free(j) for j in jobs[:2]), "a job still holds its folder"
        assert not list(tmp.glob("grok-pool-*")), "the pool's temporary folder was left"
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM, err[-3000:]
    stopped = [read(j / "checkpoint.pt")["step"] for j in jobs[:2]]
    assert all(200 <= s < 3000 and s % 1000 for s in stopped), stopped  # their exact steps
    assert not any((j / "summary.json").exists() for j in jobs[:2]), "a stopped job was marked"
    assert not (jobs[2] / "metrics.jsonl").exists(), "a queued job started after the signal"
    r = launch([*POOL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 of 3 jobs complete" in r.stderr
    assert [summary(j)["resumed_from"] for j in jobs] == [*stopped, None]
    assert all(summary(j)["steps"] == 3000 for j in jobs)


LOCAL = ["-m", "hydra/launcher=local", *SMALL, "train.steps=3000", "train.eval_every=100",
         "train.checkpoint_every=1000", "seed=0,1"]


@pytest.mark.slow
def test_sigterm_to_the_local_launcher_stops_its_submitit_jobs_and_the_relaunch_continues(tmp_path):
    """submitit's local jobs ignore SIGTERM and outlived a killed launcher, training on and
    holding their folders. Now the launcher hands SIGTERM to each job (through submitit's
    controller): each checkpoints its exact step and ends, no process of the launch is left, and
    the same command relaunched resumes both where they stopped."""
    sweep = tmp_path / "sweep"
    jobs = [job_dir(sweep, [*LOCAL[2:-1], f"seed={s}"]) for s in range(2)]
    with launched([*LOCAL, f"hydra.sweep.dir={sweep}"], tmp_path) as proc:
        wait_training(proc, jobs, 200, timeout_s=180)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        time.sleep(1.0)  # a job that outlived its launcher would still be training now
        left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        assert not left.split(), f"processes of the launch still running: {left}"
        assert all(lock_is_free(j) for j in jobs), "a job still holds its folder"
    assert proc.returncode == -signal.SIGTERM, err[-3000:]
    stopped = [read(j / "checkpoint.pt")["step"] for j in jobs]
    assert all(200 <= s < 3000 and s % 1000 for s in stopped), stopped  # their exact steps
    assert not any((j / "summary.json").exists() for j in jobs), "a stopped job was marked"
    r = launch([*LOCAL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [summary(j)["resumed_from"] for j in jobs] == stopped
    assert all(summary(j)["steps"] == 3000 for j in jobs)


# -- 7. one run's fault fails one run -----------------------------------------------------------

PACK = [*SMALL, "train.snapshot_every=20"]
FRACS = ["frac=0.3", "frac=0.5", "frac=0.7"]  # the faulty run is the middle one: the pack of the
# other two pads to the same lengths as the pack of three (padding changes float32 rounding)


def fault_snapshots_is_a_file(d: Path, monkeypatch):
    d.mkdir(parents=True)
    (d / "snapshots").write_text("not a folder")
    return "snapshots"


def fault_metrics_is_a_folder(d: Path, monkeypatch):
    (d / "metrics.jsonl").mkdir(parents=True)
    return "metrics.jsonl"


def fault_metrics_unwritable_at_step_30(d: Path, monkeypatch):
    """An I/O error appending the step-30 row (after the step-20 checkpoint), this run only."""
    from grok.record.local import LocalRecord

    real = LocalRecord.append_metrics

    def append(self, row):
        if Path(self.dir) == d and row["step"] == 30:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(d / "metrics.jsonl"))
        return real(self, row)

    monkeypatch.setattr(LocalRecord, "append_metrics", append)
    return "metrics.jsonl"


FAULTS = {"snapshots_is_a_file": fault_snapshots_is_a_file,
          "metrics_is_a_folder": fault_metrics_is_a_folder,
          "metrics_unwritable_at_step_30": fault_metrics_unwritable_at_step_30}


@pytest.mark.parametrize("fault", FAULTS)
def test_one_runs_io_fault_fails_that_run_alone_and_the_pack_trains_on(tmp_path, monkeypatch, fault):
    """Run 1's own folder fails it; runs 0 and 2 finish bit-identical to a pack without run 1, and
    run 1's error names its own path. Its fault cleared, a relaunch of the same pack finishes it."""
    cfgs = [compose_cfg([*PACK, f, f"seed={i}"]) for i, f in enumerate(FRACS)]
    dirs = [tmp_path / f"pack{i}" for i in range(3)]
    where = FAULTS[fault](dirs[1], monkeypatch)
    got = train_pack(cfgs, dirs)
    assert isinstance(got[1], OSError), got[1]
    assert str(dirs[1] / where) in str(got[1]), got[1]
    assert not (dirs[1] / "summary.json").exists()
    assert got[0]["status"] == got[2]["status"] == "complete"
    assert [got[0]["steps"], got[2]["steps"]] == [60, 60]
    monkeypatch.undo()
    ref = train_pack([cfgs[0], cfgs[2]], [tmp_path / "ref0", tmp_path / "ref2"])
    assert all(s["status"] == "complete" for s in ref)
    for i in (0, 2):
        assert_same_run(tmp_path / f"ref{i}", dirs[i])
        assert snapshots_equal(tmp_path / f"ref{i}", dirs[i])
    if (dirs[1] / "snapshots").is_file():  # the fault cleared
        (dirs[1] / "snapshots").unlink()
    if (dirs[1] / "metrics.jsonl").is_dir():
        (dirs[1] / "metrics.jsonl").rmdir()
    again = train_pack(cfgs, dirs)
    assert again[1]["status"] == "complete" and again[1]["steps"] == 60
    assert again[1]["resumed_from"] == (20 if fault == "metrics_unwritable_at_step_30" else None)
    assert [again[0], again[2]] == [got[0], got[2]]  # finished: not trained again


def test_in_a_packed_sweep_one_runs_fault_fails_its_job_only_with_its_own_error(tmp_path):
    """hydra/launcher=packed: the frac=0.5 job's `snapshots` is a file. Its summary.json says it
    failed and names its own path; the other two jobs of its pack complete; the report says so."""
    sweep = tmp_path / "sweep"
    bad = job_dir(sweep, [*PACK, "frac=0.5"])
    bad.mkdir(parents=True)
    (bad / "snapshots").write_text("not a folder")
    r = launch(["-m", "hydra/launcher=packed", *PACK, "frac=0.3,0.5,0.7", f"hydra.sweep.dir={sweep}"],
               cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "2 of 3 jobs complete" in r.stderr, r.stderr[-3000:]
    jobs = [job_dir(sweep, [*PACK, f]) for f in FRACS]
    assert jobs[1] == bad and all("pack of 3 runs" in (j / "launch.log").read_text() for j in jobs)
    failed = summary(bad)
    assert failed["status"] == "failed" and str(bad / "snapshots") in failed["error"]
    for j in (jobs[0], jobs[2]):
        assert summary(j)["status"] == "complete"
        assert str(bad) not in (j / "launch.log").read_text()  # its error is in its own log only
    assert str(bad / "snapshots") in (bad / "launch.log").read_text()


# -- 10. bit for bit, as documented ------------------------------------------------------------

@pytest.mark.parametrize("alone,others", [
    (["frac=0.3"], [["frac=0.7", "seed=1"]]),                              # its train set padded
    (["frac=0.7", "seed=2"], [["frac=0.3", "seed=1"], ["frac=0.5"]]),      # its test set padded
], ids=["0.3_with_0.7", "0.7_with_0.3_and_0.5"])
def test_a_runs_records_are_bit_identical_alone_and_in_a_pack_of_other_sizes(tmp_path, alone, others):
    """Every metric row (train and test losses included), the summary and every weight, bit for
    bit, of a run alone and the same run packed with runs of other train fractions."""
    base = [*SMALL, "train.steps=150"]
    cfg = compose_cfg([*base, *alone])
    run(cfg, tmp_path / "alone")
    got = train_pack([cfg, *(compose_cfg([*base, *o]) for o in others)],
                     [tmp_path / f"pack{i}" for i in range(1 + len(others))])
    assert all(s["status"] == "complete" for s in got)
    assert_same_run(tmp_path / "alone", tmp_path / "pack0")


def test_losses_and_per_position_losses_do_not_depend_on_how_far_a_run_is_padded():
    """The records' reductions given the same logits: a run's mean loss, accuracy and
    per-position loss and accuracy over its own examples, the same bits whether the pack pads
    them (with examples whose targets are -1) or not, whatever the padded length."""
    from grok.train import run_losses, scores

    g = torch.Generator().manual_seed(0)
    for n, K, C in [(159, 1, 23), (370, 1, 23), (64, 5, 11), (97, 3, 7)]:
        logits = torch.randn(1, n, K, C, generator=g)
        targets = torch.randint(0, C, (1, n, K), generator=g)
        targets[0, ::7, -1] = -1  # positions without a target inside a run's own examples
        loss, ce = run_losses(logits, targets)
        own = scores(logits, targets, ce, K > 1)
        for pad in (1, 13, 211):
            lp = torch.cat([logits, logits[:, :1].expand(1, pad, K, C)], 1)
            tp = torch.cat([targets, targets.new_full((1, pad, K), -1)], 1)
            # in a pack of two: this run padded, and one other run of the padded length
            lp2, tp2 = torch.cat([lp, torch.randn(lp.shape, generator=g)]), torch.cat([tp, tp.clamp(min=0)])
            got, ce2 = run_losses(lp2, tp2, counts=[n, n + pad])
            sp = scores(lp2, tp2, ce2, K > 1, counts=[n, n + pad])
            assert got[0].item() == loss[0].item(), (n, K, pad)
            for k in own:
                assert torch.equal(sp[k][0], own[k][0]), (k, n, K, pad)


def test_a_run_with_as_many_examples_is_bit_identical_in_a_pack_of_another_task_and_model(tmp_path):
    """What docs/packing.md promises bit for bit beyond the modular MLP: a run whose padded
    length is its own (attention-only model, several answer positions, drawn data) records and
    trains alone exactly as in a pack."""
    base = ["logger=none", "train.threads=1", "measures=off", "task=repeat_subseq", "model=attn_only",
            "model.n_layers=2", "model.d_model=32", "model.d_head=8", "task.length=12",
            "task.span_max=5", "train.steps=40", "train.eval_every=10", "train.early_stop_after=null"]
    cfgs = [compose_cfg([*base, "task.n_train=64", "seed=0"]),
            compose_cfg([*base, "task.n_train=64", "seed=1", "optimizer.lr=3e-3"])]
    train_pack(cfgs, [tmp_path / "pack0", tmp_path / "pack1"])
    run(cfgs[0], tmp_path / "alone")
    rows = read_metrics(tmp_path / "alone")
    assert any(k.startswith("test_loss/") for k in rows[0])
    assert_same_run(tmp_path / "alone", tmp_path / "pack0")
