"""Nothing lost, nothing run that should not be: what a run folder survives.

A complete record is never overwritten; a sweep finds its runs by their config, whatever the job
numbers; one process at a time works in a run folder; what a killed write left is cleared; a
finished run rebuilds lost records from its checkpoint; records are strict JSON; a full disk and a
crafted checkpoint fail one job with one clear line.
"""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CONF, ROOT, TINY, compose_cfg, in_use, launch, read_metrics
from omegaconf import OmegaConf

from grok.train import run, train_pack

SMALL = [*TINY, "train.steps=20", "logger=none", "train.threads=1"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; the cores may be shared


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes and mtime, and the folder's own mtimes."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else None, st.st_mtime_ns)
    out["."] = (None, folder.stat().st_mtime_ns)
    return out



def job_dir(sweep, overrides):
    from grok.record.identity import job_dirname

    return Path(sweep) / job_dirname(overrides)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


# -- 1. a complete record is never overwritten --------------------------------------------------

def test_a_refused_relaunch_writes_nothing_and_the_run_stays_finished(tmp_path):
    run_dir = tmp_path / "run"
    assert launch([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path).returncode == 0
    before = snapshot(run_dir)
    time.sleep(0.01)
    r = launch([*SMALL, "frac=0.6", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert str(run_dir) in line and "another config" in line and "frac" in line
    assert snapshot(run_dir) == before, "a refused launch wrote into the folder"
    r = launch([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)  # the original command
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    assert (run_dir / "summary.json").read_bytes() == before["summary.json"][0]


def test_a_refused_run_in_a_sweep_writes_nothing_there_and_is_reported(tmp_path):
    """Job seed=1's folder holds a run of another config (a foreign run placed there; the same
    happens when conf/ defaults change under a sweep): that job is refused and its folder left as
    it was; job seed=0 trains; the report says which is which and the launch exits non-zero."""
    sweep = tmp_path / "sweep"
    foreign = job_dir(sweep, ["seed=1", *TINY])
    run(compose_cfg([*SMALL, "seed=1", "optimizer.weight_decay=0.5"]), foreign)
    before = snapshot(foreign)
    r = launch(["-m", "seed=0,1", *SMALL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode != 0
    assert snapshot(foreign) == before
    assert "1 of 2 jobs complete" in r.stderr
    assert f"refused     {foreign.name}: " in r.stderr and "optimizer.weight_decay" in r.stderr
    done = job_dir(sweep, ["seed=0", *TINY])
    assert json.loads((done / "summary.json").read_text())["status"] == "complete"


def test_record_failure_never_replaces_a_complete_summary(tmp_path):
    from grok.record.local import record_failure

    run(compose_cfg(SMALL), tmp_path)
    before = (tmp_path / "summary.json").read_bytes()
    record_failure(tmp_path, RuntimeError("boom"))
    assert (tmp_path / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_a_sweep_relaunched_reordered_or_extended_trains_only_what_is_missing(tmp_path):
    base = [*SMALL, "sweep_id=S"]
    sweep = tmp_path / "outputs" / "sweeps" / "S"

    def records():
        return {p.name: {f: snapshot(p)[f] for f in ("summary.json", "checkpoint.pt")}
                for p in sweep.iterdir() if (p / "config.yaml").exists()}

    r = launch(["-m", "frac=0.5,0.7", *base], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    first = records()
    assert len(first) == 2
    r = launch(["-m", "frac=0.7,0.5", *base], cwd=tmp_path)   # reordered: the job numbers swap
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 of 2 jobs complete" in r.stderr
    assert records() == first, "a finished run was trained again or its record overwritten"
    r = launch(["-m", "frac=0.9,0.5,0.7", *base], cwd=tmp_path)  # extended
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 of 3 jobs complete" in r.stderr
    now = records()
    assert len(now) == 3 and {k: now[k] for k in first} == first
    jobs = {f: job_dir(sweep, [f"frac={f}", *TINY]) for f in ("0.5", "0.7", "0.9")}
    assert set(now) == {j.name for j in jobs.values()}
    s = json.loads((jobs["0.9"] / "summary.json").read_text())
    assert s["status"] == "complete" and s["frac"] == 0.9


def test_two_jobs_of_a_sweep_that_are_one_run_stop_before_anything_runs(tmp_path):
    """train.steps does not make another run (a longer budget continues one): two jobs that
    differ only in it would share one folder."""
    r = launch(["-m", *TINY, "train.steps=20,40", "logger=none"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert "share the run folder" in line and "train.steps" in line
    assert list(tmp_path.iterdir()) == []


def test_job_folders_are_named_by_identity():
    from grok.record.identity import MAX_NAME, job_dirname

    a = job_dirname(["frac=0.5", "op=x2+y2", "task=poly", "sweep_id=A", "train.steps=9"])
    assert a == "frac=0.5,op=x2+y2,task=poly"
    assert job_dirname(["task=poly", "op=x2+y2", "frac=.50", "sweep_id=B", "logger=none",
                        "train.device=cpu", "logger.mode=offline"]) == a
    assert job_dirname([]) == job_dirname(["sweep_id=X"]) == "default"
    assert job_dirname(["frac=0.3", "seed=1", "frac=0.5"]) == "frac=0.5,seed=1"  # the last one wins
    unsafe = [job_dirname(["task=poly", f"op={op}"]) for op in ("x/y", "x*y", "'(x+y)^3'", "x_y")]
    assert len(set(unsafe)) == 4
    for name in unsafe + [job_dirname([f"model.d_mlp={i}" for i in range(40)])]:
        assert len(name) <= MAX_NAME and all(c.isalnum() or c in "_.,=+-" for c in name), name
    # Hydra asks for the same name (hydra.sweep.subdir)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["task=poly", "op=x/y", "frac=0.5", "sweep_id=Q"],
                      return_hydra_config=True)
    assert cfg.hydra.sweep.subdir == job_dirname(["op=x/y", "frac=0.5", "task=poly"])


def test_the_sweep_report_lists_every_job_with_its_state(tmp_path, capsys):
    """Jobs that never got a folder, died without a summary, or whose folder is in use are
    listed too: a 3-job sweep never reads "0 of 2"."""
    from launch import report

    sweep = tmp_path / "sweep"
    jobs = [[f"seed={s}", *TINY] for s in range(4)]
    cfgs = [compose_cfg([*j, "logger=none", "train.steps=20"]) for j in jobs]
    run(cfgs[0], job_dir(sweep, jobs[0]))
    job_dir(sweep, jobs[1]).mkdir()
    (job_dir(sweep, jobs[1]) / "config.yaml").write_text(OmegaConf.to_yaml(cfgs[1], resolve=True))
    with in_use(job_dir(sweep, jobs[2])):
        assert not report(str(sweep), list(zip(jobs, cfgs)))
    err = capsys.readouterr().err
    assert "1 of 4 jobs complete" in err
    assert f"complete    {job_dir(sweep, jobs[0]).name}: " in err
    assert f"unfinished  {job_dir(sweep, jobs[1]).name}: " in err
    assert f"running     {job_dir(sweep, jobs[2]).name}: in use by pid {os.getpid()}" in err
    assert f"not run     {job_dir(sweep, jobs[3]).name}: no folder" in err


# -- 2. a finished run rebuilds what was lost ---------------------------------------------------

def test_a_finished_run_rebuilds_a_lost_summary_and_metrics_from_its_checkpoint(tmp_path):
    cfg = compose_cfg(SMALL)
    first = run(cfg, tmp_path)
    summary, metrics = (tmp_path / "summary.json").read_bytes(), (tmp_path / "metrics.jsonl").read_bytes()
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    for damage in ("delete", "failed", "torn"):
        if damage == "delete":
            (tmp_path / "summary.json").unlink()
            (tmp_path / "metrics.jsonl").unlink()
        elif damage == "failed":  # what record_failure used to leave over a finished run
            (tmp_path / "summary.json").write_text('{"status": "failed", "error": "x"}')
        else:
            (tmp_path / "metrics.jsonl").write_bytes(metrics[:-30])
        assert run(cfg, tmp_path) == first
        assert (tmp_path / "summary.json").read_bytes() == summary
        assert (tmp_path / "metrics.jsonl").read_bytes() == metrics
        assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime, "trained again"
    # a checkpoint written before finished checkpoints held their summary: recomputed from it
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del ck["summary"]
    torch.save(ck, tmp_path / "checkpoint.pt")
    (tmp_path / "summary.json").unlink()
    rebuilt = run(cfg, tmp_path)
    volatile = {"steps_per_s", "resumed_from"}
    assert {k: v for k, v in rebuilt.items() if k not in volatile} == \
        {k: v for k, v in first.items() if k not in volatile}


def test_leftover_tmp_files_are_removed_when_a_run_starts(tmp_path):
    (tmp_path / ".hydra").mkdir()
    left = [tmp_path / ".checkpoint.pt.k2j_x9a1.tmp", tmp_path / ".summary.json.abcd1234.tmp",
            tmp_path / ".metrics.jsonl.zz99zz99.tmp", tmp_path / ".hydra" / ".config.yaml.q1w2e3r4.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".keep"]
    for p in left + kept:
        p.write_text("x")
    run(compose_cfg(SMALL), tmp_path)
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept)


def test_a_finished_run_continued_to_a_longer_budget_equals_one_never_stopped(tmp_path):
    """A run's last eval takes the full measures; continued to a longer budget, that eval is no
    longer the last one and keeps only what a longer run measures there."""
    base = ["logger=none", *TINY, "train.threads=1"]  # the full measures every 10 evals
    run(compose_cfg([*base, "train.steps=40"]), tmp_path / "a")
    assert "key_freqs" in read_metrics(tmp_path / "a")[-1]
    run(compose_cfg([*base, "train.steps=60"]), tmp_path / "a")
    run(compose_cfg([*base, "train.steps=60"]), tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in a] == list(range(0, 61, 10))
    assert a == b
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert wa["metrics"] == wb["metrics"]
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wb["model"])



def test_config_yaml_shows_the_op_trained_and_older_folders_still_resume(tmp_path):
    """config.yaml's task.op is the op the run learned (not poly's default). A folder written
    before that (task.op the default, in config.yaml and the checkpoint's fingerprint) is the same
    run: it resumes, and another op is still refused."""
    from grok.record.checkpoint import read, write
    from grok.record.lock import RunRefused

    base = ["logger=none", *TINY, "task=poly", "op=x2+y2", "measures=off"]
    run(compose_cfg([*base, "train.steps=20"]), tmp_path / "a")
    saved = OmegaConf.load(tmp_path / "a" / "config.yaml")
    assert saved.op == saved.task.op == "x2+y2"
    default = compose_cfg(["task=poly"]).task.op
    assert default != "x2+y2"
    saved.task.op = default  # as the previous version wrote it
    (tmp_path / "a" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    ck = read(tmp_path / "a" / "checkpoint.pt")
    ck["fingerprint"]["task"] = {**ck["fingerprint"]["task"], "op": default}
    write(tmp_path / "a" / "checkpoint.pt", ck)
    s = run(compose_cfg([*base, "train.steps=40"]), tmp_path / "a")
    assert s["resumed_from"] == 20 and s["steps"] == 40
    with pytest.raises(RunRefused, match="op"):
        run(compose_cfg([*base[:-2], "op=x+y", "measures=off", "train.steps=60"]), tmp_path / "a")

# -- 3. one process per run folder --------------------------------------------------------------

def test_a_launch_into_a_folder_in_use_is_refused_with_the_holders_pid(tmp_path):
    run_dir = tmp_path / "run"
    with in_use(run_dir):  # this process, as another launch training there
        before = snapshot(run_dir)
        r = launch([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
        assert snapshot(run_dir) == before
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert str(run_dir) in line and f"pid {os.getpid()}" in line


@pytest.mark.slow
def test_two_launches_into_one_folder_leave_one_clean_record(tmp_path):
    """The first launch trains; a second one into the same folder, same config or not, is
    refused while it does; the record is that of one run, each eval once."""
    run_dir = tmp_path / "run"
    long = [*SMALL, "train.steps=4000", "train.eval_every=100", "train.checkpoint_every=100"]
    first = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *long, f"hydra.run.dir={run_dir}"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "config.yaml").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline
            time.sleep(0.05)
        for other in ([], ["frac=0.6"]):
            r = launch([*long, *other, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
            assert first.poll() is None, "the first launch ended before the second was refused"
            assert r.returncode == 2
            line = one_error_line(r.stderr)
            assert str(run_dir) in line
            if not other:
                assert f"pid {first.pid}" in line
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    steps = [row["step"] for row in read_metrics(run_dir)]
    assert steps == list(range(0, 4001, 100))
    assert OmegaConf.load(run_dir / "config.yaml").frac == compose_cfg(long).frac != 0.6


def test_each_run_of_a_pack_holds_its_folder(tmp_path):
    a, b = compose_cfg([*SMALL, "seed=0"]), compose_cfg([*SMALL, "seed=1"])
    got = train_pack([a, a], [tmp_path / "same", tmp_path / "same"])  # two jobs, one folder
    assert isinstance(got[1], RuntimeError) and "in use" in str(got[1])
    assert got[0]["status"] == "complete" and len(read_metrics(tmp_path / "same")) == 3
    with in_use(tmp_path / "busy"):
        got = train_pack([a, b], [tmp_path / "free", tmp_path / "busy"])
        assert isinstance(got[1], RuntimeError) and f"in use by pid {os.getpid()}" in str(got[1])
        assert [p.name for p in (tmp_path / "busy").iterdir()] == [".lock"]
    assert got[0]["status"] == "complete"


# -- 4. strict JSON, full disks, crafted checkpoints --------------------------------------------

def _strict(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_diverged_records_are_strict_json_that_the_readers_take(tmp_path):
    from analysis.collate import load_runs

    summary = run(compose_cfg([*SMALL, "optimizer=sgd", "optimizer.lr=1e8", "train.steps=200"]),
                  tmp_path)
    assert summary["diverged"]
    rows = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] is None  # non-finite: null
    saved = _strict((tmp_path / "summary.json").read_text())
    assert saved["diverged"] and saved["final_train_loss"] is None
    m = pd.read_json(tmp_path / "metrics.jsonl", lines=True, precise_float=True)
    assert m.train_loss.isna().iloc[-1] and m.train_loss.notna().iloc[0]
    runs, problems = load_runs(tmp_path)
    assert problems == [] and len(runs) == 1


def _enospc_for(pattern, real=os.fsync):
    def fsync(fd):
        if pattern in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    return fsync


def test_a_full_disk_fails_with_the_path_and_overwrites_nothing(tmp_path, monkeypatch):
    from grok.record.local import record_failure

    run(compose_cfg(SMALL), tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "fsync", _enospc_for(str(tmp_path)))
    with pytest.raises(OSError) as e:  # continued to a longer budget on a full disk
        run(compose_cfg([*SMALL, "train.steps=40"]), tmp_path)
    assert "no space left on device" in str(e.value) and str(tmp_path) in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert not record_failure(tmp_path, e.value)
    monkeypatch.undo()
    now = snapshot(tmp_path)
    for name in ("summary.json", "checkpoint.pt", "metrics.jsonl", "config.yaml"):
        assert now[name] == before[name], name
    assert not list(tmp_path.glob(".*.tmp"))


FULL_DISK = """
import errno, os, runpy, sys
real = os.fsync
def fsync(fd):
    if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd)
os.fsync = fsync
sys.argv = [sys.argv[0], *sys.argv[1:]]
runpy.run_path(%r, run_name="__main__")
""" % str(ROOT / "launch.py")


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_job_fails(tmp_path):
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", FULL_DISK, *SMALL, f"hydra.run.dir={run_dir}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert f"{run_dir / 'checkpoint.pt'}: no space left on device" in line
    failed = json.loads((run_dir / "summary.json").read_text())
    assert failed["status"] == "failed" and "no space left on device" in failed["error"]
    assert not (run_dir / "checkpoint.pt").exists() and not list(run_dir.glob(".*.tmp"))
    r = launch([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)  # room again: it trains
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"


class Payload:
    """Unpickled, this creates the file `marker` (pickle calls open(marker, "w"))."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_crafted_checkpoint_does_not_run_its_payload_and_fails_that_job(tmp_path):
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    torch.save({"format": 2, "step": 0, "x": Payload(marker)}, crafted / "checkpoint.pt")
    torch.load(crafted / "checkpoint.pt", weights_only=False)["x"].close()  # the payload is live...
    assert marker.exists()
    marker.unlink()
    r = launch([*SMALL, f"hydra.run.dir={crafted}"], cwd=tmp_path)  # ...but resuming never runs it
    assert not marker.exists()
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert str(crafted / "checkpoint.pt") in line and "not a readable checkpoint" in line
    assert json.loads((crafted / "summary.json").read_text())["status"] == "failed"
    # in a pack, only that run fails
    (crafted / "summary.json").unlink()
    got = train_pack([compose_cfg(SMALL), compose_cfg([*SMALL, "seed=1"])], [crafted, tmp_path / "ok"])
    assert isinstance(got[0], RuntimeError) and got[1]["status"] == "complete"
    assert not marker.exists()
