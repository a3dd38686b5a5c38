"""launch.py as a user meets it: bad input stops before anything is written; a sweep leaves
one complete record per job, locally and in offline W&B."""

import json

import pandas as pd
import pytest
from conftest import TINY, assert_logged, launch, wandb_files

from grok.record.identity import job_dirname
from grok.wandb_offline import read_run, wait_until_finished

BAD = [
    (["task=poly", "op=x+z"], "'x+z'"),
    (["task=poly", "op=x+"], "'x+'"),
    (["task=poly", "op=x++y"], "'x++y'"),
    (["task=poly", "op=*x"], "'*x'"),
    (["task=poly", "op='(x+y'"], "'(x+y'"),
    (["task=poly", "op='x+y)'"], "'x+y)'"),
    (["task=poly", "op=x**"], "'x**'"),
    (["task=poly", "op='x^y'"], "'x^y'"),
    (["task=poly", "op=1.5x"], "1.5x"),
    (["task=poly", "op=x-x"], "'x-x'"),
    (["task=poly", "op=''"], "''"),
    (["task=poly", "op=sin(x)"], "sin(x)"),
    (["task=poly", "op=x$y"], "x$y"),
    (["task=poly", "op=1e3"], "1000.0"),
    (["task=div", "p=91"], "91"),
    (["task=poly", "op=x/y", "p=91"], "91"),
    (["task=add", "op=x*y"], "x*y"),
    (["frac=0"], "frac=0"),
    (["frac=1.0"], "frac=1.0"),
    (["frac=-0.2"], "frac=-0.2"),
    (["p=1"], "p=1"),
    (["p=abc"], "abc"),
    (["task=nope"], "nope"),
    (["model=gpt9"], "gpt9"),
    (["optimizer=lion"], "lion"),
    (["train.steps=0"], "train.steps=0"),
    (["-m", "task=poly", "op=x+y,x+q"], "x+q"),       # one bad job stops the whole sweep up front
    (["-m", "frac=0.5,1.5"], "frac=1.5"),
    (["train.dtype=float16"], "float16"),
    (["train.device=banana"], "banana"),
    (["train.threads=-1"], "train.threads=-1"),
    (["-m", "hydra/launcher=packed", "seed=0,1", "train.dtype=half"], "half"),
]
if not __import__("torch").cuda.is_available():  # checked up front where the jobs run here
    BAD.append((["-m", "hydra/launcher=packed", "train.device=cuda", "seed=0,1"], "cuda"))


@pytest.mark.parametrize("args,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_nonzero_exit_nothing_written(tmp_path, args, named):
    r = launch(args, cwd=tmp_path, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]  # the documented status for bad input
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert named in lines[0]
    assert list(tmp_path.iterdir()) == [], "no run folder may be created for bad input"


@pytest.mark.slow
def test_sweep_two_ops_two_fracs_local_records_match_offline_wandb(tmp_path):
    sweep = tmp_path / "sweep"
    r = launch(["-m", "task=poly", "op=x+y,x2+y2", "frac=0.5,0.7", *TINY,
                f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "wandb")  # W&B's: below
    assert {p.name for p in runs} == {job_dirname(["task=poly", f"op={op}", f"frac={frac}", *TINY])
                                      for op in ("x+y", "x2+y2") for frac in (0.5, 0.7)}
    seen, groups = set(), set()
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        metrics = pd.read_json(run / "metrics.jsonl", lines=True, precise_float=True)
        config = (run / "config.yaml").read_text()
        assert summary["status"] == "complete" and summary["steps"] == 60
        assert list(metrics.step) == list(range(0, 61, 10))
        assert f"frac: {summary['frac']}" in config
        seen.add((summary["op"], summary["frac"]))
        files = wandb_files(run)
        assert files[0].parent.parent == sweep / "wandb"  # the sweep's W&B runs together
        assert len(files) == 1
        wait_until_finished(files[0])
        wb = read_run(files[0])
        groups.add(wb["group"])
        assert wb["config"]["op"] == {"x+y": "x+y", "x^2+y^2": "x2+y2"}[summary["op"]]
        assert wb["config"]["frac"] == summary["frac"]
        history = wb["history"]
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [h["_step"] for h in history] == [r["step"] for r in rows]
        assert any("key_freqs" in r for r in rows) and "gini_embed" in rows[0]  # measures too
        for h, row in zip(history, rows):
            assert_logged(h, row)
        assert wb["summary"]["verdict"] == summary["verdict"]
    assert seen == {("x+y", .5), ("x+y", .7), ("x^2+y^2", .5), ("x^2+y^2", .7)}
    assert len(groups) == 1 and groups.pop() == summary["sweep_id"]


@pytest.mark.parametrize("launcher", ["basic", "packed"])
def test_a_failing_job_does_not_stop_the_sweep_and_is_reported(tmp_path, launcher):
    """Job seed=0 finds a corrupt checkpoint in its folder (a fault no up-front check can see)."""
    sweep = tmp_path / "sweep"
    bad, good = (sweep / job_dirname([f"seed={s}", *TINY]) for s in (0, 1))
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    extra = ["hydra/launcher=packed", "hydra.launcher.max_pack=1"] if launcher == "packed" else []
    r = launch(["-m", *extra, "seed=0,1", *TINY, "train.steps=20", "logger=none", "train.threads=1",
                f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode != 0
    failed = json.loads((bad / "summary.json").read_text())
    assert failed["status"] == "failed" and "checkpoint" in failed["error"].lower()
    assert "Traceback" in (bad / "launch.log").read_text()
    assert json.loads((good / "summary.json").read_text())["status"] == "complete"
    assert "1 of 2 jobs complete" in r.stderr
    assert f"failed      {bad.name}: {failed['error']} (log: {bad}/launch.log)" in r.stderr
