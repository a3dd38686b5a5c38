"""What a kill costs the records beside the run folder's own: the W&B run, a continued run's
summary, a transfer run's source.

Each kill is a real one (SIGKILL, or SIGTERM's checkpoint-then-die path) sent by the launched
process to itself at a chosen point (`launch_dying`), so the timing is exact and the test quick.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, assert_logged, assert_same_run, compose_cfg, read_metrics

from grok.train import run

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; the cores may be shared

BASE = [*TINY, "train.threads=1", "train.eval_every=10", "train.checkpoint_every=100"]
QUIET = [*BASE, "logger=none"]

# Run launch.py, patched to send itself `sig` at a point of the run's life: at the first eval at
# or past `step` (`evaluate`), or where a run would write its summary (`summary`: after its final
# checkpoint, before summary.json and the W&B finish).
DYING = r"""
import os, runpy, signal, sys
from grok.record.local import LocalRecord
from grok.runs import Run
where, step, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
if where == "evaluate":
    evaluate = Run.evaluate
    def dying(self, model, row):
        if self.step >= step:
            Run.evaluate = evaluate  # once: SIGTERM checkpoints at the next step, then dies
            os.kill(os.getpid(), sig)
        return evaluate(self, model, row)
    Run.evaluate = dying
else:
    def dying(self, summary):
        os.kill(os.getpid(), sig)
    LocalRecord.write_summary = dying
sys.argv = sys.argv[4:]  # launch.py and its arguments
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def own_env() -> dict:
    """The environment of a launch of its own: not the wandb-core service an earlier test started
    in this process (wandb exports WANDB_SERVICE), which would outlive the kills."""
    return {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "HYDRA_FULL_ERROR": "0"}


def launch_dying(args, run_dir, where="evaluate", step=0, sig="SIGKILL"):
    """launch.py with `args` into `run_dir`, killed by `sig` at `where` (see DYING)."""
    env = own_env()
    p = subprocess.run([sys.executable, "-c", DYING, where, str(step), sig, str(ROOT / "launch.py"),
                        *args, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode < 0, f"the run was not killed (rc {p.returncode}): {p.stderr[-2000:]}"
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def relaunch(args, run_dir):
    env = own_env()
    p = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, f"hydra.run.dir={run_dir}"],
                       cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def summary_of(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


# -- 3. the W&B run holds every row metrics.jsonl holds, however the process died ---------------

def wandb_run(run_dir, run_id) -> tuple[dict, dict]:
    """(rows by step, summary) of the W&B run `run_id`, over the transaction logs of every
    process that logged to it; a killed process' file may be empty or end torn."""
    from grok.wandb_offline import find_run_files, read_run, wait_until_finished

    files = [f for f in find_run_files(run_dir / "wandb") if f.name == f"run-{run_id}.wandb"]
    assert files, f"no W&B run {run_id} in {run_dir}"
    try:  # the relaunch's, which finished (the folder names are timestamped)
        wait_until_finished(files[-1], timeout=60)
    except TimeoutError:
        pytest.fail(f"the W&B run {run_id} was never finished: {files[-1]} has no exit record")
    rows, summary = {}, {}
    for f in files:
        try:
            got = read_run(f)
        except ValueError:  # killed before it wrote its header
            continue
        for h in got["history"]:
            rows.setdefault(h["_step"], {}).update(h)
        summary.update(got["summary"])
    return rows, summary


def assert_wandb_holds_every_row(run_dir):
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    rows, summary = wandb_run(run_dir, ck["wandb_id"])
    metrics = read_metrics(run_dir)
    missing = [m["step"] for m in metrics if m["step"] not in rows]
    assert not missing, f"W&B lacks the rows at steps {missing}"
    for m in metrics:
        assert_logged(rows[m["step"]], m)
    return summary


@pytest.mark.parametrize("sig,step", [("SIGKILL", 310),
                                      pytest.param("SIGTERM", 290, marks=pytest.mark.slow)])
def test_a_killed_run_relaunched_has_every_row_in_wandb(tmp_path, sig, step):
    """Killed mid-run (SIGKILL just past its step-300 checkpoint; SIGTERM, which checkpoints the
    step it stopped at first): the rows before the checkpoint that the dead process had logged but
    wandb-core had not written out are logged again by the relaunch."""
    run_dir = tmp_path / "run"
    args = [*BASE, "train.steps=400"]
    ck = launch_dying(args, run_dir, step=step, sig=sig)
    assert ck["step"] == (300 if sig == "SIGKILL" else 291) and not ck["done"]
    assert relaunch(args, run_dir)["steps"] == 400
    summary = assert_wandb_holds_every_row(run_dir)
    assert summary["verdict"] == summary_of(run_dir)["verdict"]


@pytest.mark.slow
def test_a_run_killed_after_its_final_checkpoint_finishes_its_wandb_run_when_relaunched(tmp_path):
    """Killed between its final checkpoint and its summary (so before W&B's finish): the
    relaunch has nothing to train, but the W&B run gets the rows it lacks and its summary."""
    run_dir = tmp_path / "run"
    args = [*BASE, "train.steps=300"]
    ck = launch_dying(args, run_dir, where="summary")
    assert ck["done"] and ck["step"] == 300
    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    assert relaunch(args, run_dir)["steps"] == 300
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime, "trained again"
    summary = assert_wandb_holds_every_row(run_dir)
    assert summary["verdict"] == summary_of(run_dir)["verdict"]


def test_a_relaunched_finished_run_trained_without_wandb_gets_no_wandb_run(tmp_path):
    """W&B is a view of what was logged there: a finished run relaunched with logger=wandb does
    not make a W&B run afterwards."""
    run(compose_cfg([*QUIET, "train.steps=40"]), tmp_path)
    run(compose_cfg([*BASE, "train.steps=40"]), tmp_path)
    assert not (tmp_path / "wandb").exists()


# -- 4. a continued run's state is its checkpoint's, not an earlier budget's summary ------------

def test_a_continuation_killed_before_its_summary_gets_the_checkpoints_summary(tmp_path):
    """Continued from 200 to 400 steps and killed after its final checkpoint, before its summary:
    the folder reads unfinished, and a relaunch (with either budget) writes the summary of step
    400, the one a run trained straight to 400 has."""
    from analysis.collate import load_runs
    from grok.record.status import job_status

    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    run(compose_cfg([*QUIET, "train.steps=400"]), straight)
    run(compose_cfg([*QUIET, "train.steps=200"]), run_dir)
    ck = launch_dying([*QUIET, "train.steps=400"], run_dir, where="summary")
    assert ck["done"] and ck["step"] == 400 and summary_of(run_dir)["steps"] == 200
    status, why = job_status(run_dir)
    assert status == "unfinished" and "continuation" in why, (status, why)
    runs, problems = load_runs(tmp_path)
    assert list(runs.run) == [str(straight)]
    assert any(str(run_dir) in p and "continuation" in p for p in problems), problems
    for budget in (200, 400):  # the original command too: the checkpoint says done at 400
        assert run(compose_cfg([*QUIET, f"train.steps={budget}"]), run_dir)["steps"] == 400
        assert summary_of(run_dir)["steps"] == 400
        assert job_status(run_dir)[0] == "complete"
    assert_same_run(straight, run_dir)
    # complete now, and the same run as `straight` (same identity, same steps): counted once
    runs, problems = load_runs(tmp_path)
    assert len(runs) == 1 and runs.run.iloc[0] in (str(run_dir), str(straight))
    assert any("same run as" in p for p in problems), problems


@pytest.mark.parametrize("step", [210, pytest.param(380, marks=pytest.mark.slow)],
                         ids=["at-its-first-eval", "midway"])
def test_a_continuation_killed_on_the_way_is_not_complete(tmp_path, step):
    """Continued from 200 to 600 steps and killed on the way (at its first eval: nothing past the
    summary's step yet but config.yaml's budget): status, analysis and load_run all read an
    unfinished run, not the 200-step summary with weights that are gone. A relaunch finishes it."""
    import grok
    from analysis.collate import load_runs
    from grok.record.status import job_status

    run_dir = tmp_path / "run"
    args = [*QUIET, "train.snapshot_every=150"]  # 200 is off the grid: its end snapshot goes
    run(compose_cfg([*args, "train.steps=200"]), run_dir)
    ck = launch_dying([*args, "train.steps=600"], run_dir, step=step)
    assert summary_of(run_dir)["status"] == "complete" and summary_of(run_dir)["steps"] == 200
    assert ck["step"] == (300 if step == 380 else 200)
    status, why = job_status(run_dir)
    assert status == "unfinished" and "continuation" in why, (status, why)
    runs, problems = load_runs(tmp_path)
    assert runs.empty and any("continuation" in p for p in problems), problems
    r = grok.load_run(run_dir)
    assert r.final_step is None and 200 not in r.steps and "unfinished" in repr(r)
    with pytest.raises(ValueError, match="continuation in progress"):
        r.weights()
    assert {0, 150} <= set(r.steps) and r.weights(150)  # what is kept still reads
    assert relaunch([*args, "train.steps=600"], run_dir)["steps"] == 600
    assert job_status(run_dir)[0] == "complete" and grok.load_run(run_dir).final_step == 600


# -- 5. a transfer run keeps the source it loaded ------------------------------------------------

TRANSFER = [*QUIET, "train.steps=300", "init.load=[W_E]", "init.freeze=[W_E]"]


def continue_source(source, steps):
    return run(compose_cfg([*QUIET, f"train.steps={steps}"]), source)


@pytest.mark.parametrize("continued", [1, pytest.param(2, marks=pytest.mark.slow)],
                         ids=["source-continued-once", "twice"])
def test_a_transfer_resumed_after_its_source_continued_records_the_source_it_loaded(tmp_path, continued):
    """A transfer run killed, its source continued (200 -> 300 -> 400 steps) while it was down,
    then resumed: it ends as the uninterrupted transfer from the 200-step source does, and its
    summary names that source by step and content, not the source folder's current state."""
    source, ref, t = tmp_path / "source", tmp_path / "ref", tmp_path / "t"
    continue_source(source, 200)
    at_start = torch.load(source / "checkpoint.pt", weights_only=True)
    args = [*TRANSFER, f"init.from={source}"]
    expected = run(compose_cfg(args), ref)
    assert expected.get("init_source_step") == 200, "the record names no source step"
    from grok.init import content_hash

    frozen = [n for n in at_start["model"] if n.endswith("W_E")]
    assert expected["init_source_hash"] == content_hash(at_start, frozen)
    for k in range(continued):
        launch_dying(args, t, step=150 + 100 * k)
        continue_source(source, 300 + 100 * k)
    now = torch.load(source / "checkpoint.pt", weights_only=True)
    assert now["step"] == 200 + 100 * continued
    got = run(compose_cfg(args), t)
    assert got["resumed_from"] in (100, 200)
    assert got["init_source_step"] == 200 and got["init_source_hash"] == expected["init_source_hash"]
    assert got["init_source_verdict"] == at_start["summary"]["verdict"]
    assert got["init_source_grok_step"] == at_start["summary"]["grok_step"]
    assert_same_run(ref, t)
    final = torch.load(t / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(final[n], at_start["model"][n]) for n in frozen)
    assert not all(torch.equal(now["model"][n], at_start["model"][n]) for n in frozen)


def test_a_transfer_started_after_its_source_continued_records_the_new_source(tmp_path):
    """The record is of the start: a transfer run started after the continuation loads and names
    the source as it is then."""
    source, t = tmp_path / "source", tmp_path / "t"
    continue_source(source, 200)
    continue_source(source, 300)
    got = run(compose_cfg([*TRANSFER, f"init.from={source}"]), t)
    assert got.get("init_source_step") == 300


@pytest.mark.slow
def test_a_resume_while_its_source_trains_on_is_refused_in_one_line_then_goes_on(tmp_path):
    """The source killed midway through a continuation (its checkpoint: unfinished): resuming a
    transfer run that names it is one line, exit 2, nothing written to the run; once the source
    finishes, the resume keeps the source it loaded at its start."""
    source, t = tmp_path / "source", tmp_path / "t"
    continue_source(source, 200)
    args = [*TRANSFER, f"init.from={source}"]
    launch_dying(args, t, step=150)
    launch_dying([*QUIET, "train.steps=400"], source, step=300)
    before = {p.name: p.read_bytes() for p in t.iterdir() if p.is_file()}
    r = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, f"hydra.run.dir={t}"],
                       cwd=tmp_path, env=own_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    [line] = r.stderr.strip().splitlines()
    assert f"init.from={source}" in line and "incomplete" in line and "finish it first" in line
    assert {p.name: p.read_bytes() for p in t.iterdir() if p.is_file()} == before
    continue_source(source, 400)
    got = relaunch(args, t)
    assert got["init_source_step"] == 200 and got["steps"] == 300

