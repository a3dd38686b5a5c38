"""`hydra/sweeper=boundary` end to end on real runs (tiny p and budget, the packed launcher): the
same points and intervals whether the sweep runs through, stops after round 0 and is relaunched,
or is killed inside a round; no finished run trains again; a grid sweep's runs are reused. Also
its up-front checks, the dry run, and `python -m analysis boundary`."""

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT, launch
from hydra.core.utils import JobReturn, JobStatus

sys.path.insert(0, str(ROOT))
from hydra_plugins.grok_launchers.boundary_sweeper import outcome  # noqa: E402
from launch import check  # noqa: E402

# Two cells (x+y groks from frac 0.7 at this budget and threshold; x-y never), frac in [0.1, 0.9]
# at resolution 0.1, coarse grid 0.1, 0.5, 0.9: round 0, then two bisection rounds for x+y.
CELLS = ["task=poly", "op=x+y,x-y", "p=11", "model.d_model=32", "model.d_mlp=64", "logger=none",
         "measures=off", "train.steps=300", "train.eval_every=50", "train.early_stop_after=null",
         "grok.threshold=0.6", "train.threads=1"]  # one thread: the same bits on any machine
SEARCH = ["hydra/sweeper=boundary", "hydra.sweeper.resolution=0.1", "hydra.sweeper.coarse=3"]
PACKED = ["hydra/launcher=packed"]


def sweep(cwd, sweep_id, *extra):
    r = launch(["-m", *SEARCH, *PACKED, *CELLS, f"sweep_id={sweep_id}", *extra], cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def result(cwd, sweep_id) -> dict:
    return json.loads((cwd / "outputs" / "sweeps" / sweep_id / "boundary.json").read_text())


def finished(cwd, sweep_id) -> dict:
    """{run folder name: (summary.json text, its mtime)} of every finished run of the sweep."""
    out = {}
    for d in (cwd / "outputs" / "sweeps" / sweep_id).iterdir():
        s = d / "summary.json"
        if s.exists():
            out[d.name] = (s.read_text(), os.stat(s).st_mtime_ns, os.stat(d / "checkpoint.pt").st_mtime_ns)
    return out


def searched(doc) -> tuple:
    """What must not depend on interruptions: per cell its status, interval and points, and the
    runs of each round with their outcomes."""
    return ([(r["status"], r["interval"], r["points"], r["runs"]) for r in doc["rows"]],
            sorted((x["round"], x["folder"], x["outcome"]) for x in doc["runs"]))


@pytest.fixture(scope="module")
def through(tmp_path_factory):
    """The reference: one uninterrupted boundary sweep."""
    cwd = tmp_path_factory.mktemp("through")
    sweep(cwd, "b")
    return cwd, result(cwd, "b")


def test_an_uninterrupted_sweep_finds_the_boundary_by_bisection(through):
    _, doc = through
    (add, sub) = doc["rows"]
    assert [p["value"] for p in add["points"]] == [0.1, 0.5, 0.6, 0.7, 0.9]
    assert add["status"] == "found" and add["interval"] == [0.6, 0.7] and add["yes_end"] == 0.7
    assert sub["status"] == "nowhere" and [p["value"] for p in sub["points"]] == [0.1, 0.5, 0.9]
    assert doc["rounds"] == 3 and doc["runs_spent"] == 8 == add["runs"] + sub["runs"]
    # round 0 is the coarse grid of both cells in one batch; then one point a round for x+y
    rounds = [sorted(float(x["value"]) for x in doc["runs"] if x["round"] == n) for n in range(3)]
    assert rounds == [[0.1, 0.1, 0.5, 0.5, 0.9, 0.9], [0.7], [0.6]]


def test_stopped_after_round_0_and_relaunched_it_finds_the_same_and_trains_nothing_again(
        through, tmp_path):
    _, reference = through
    sweep(tmp_path, "b", "hydra.sweeper.max_rounds=1")
    first = result(tmp_path, "b")
    assert first["rounds"] == 1 and first["runs_spent"] == 6
    assert first["rows"][0]["status"] == "open" and first["rows"][0]["capped"]
    before = finished(tmp_path, "b")
    assert len(before) == 6
    sweep(tmp_path, "b")
    after = finished(tmp_path, "b")
    assert {k: after[k] for k in before} == before  # no finished run written again
    assert len(after) == 8
    assert searched(result(tmp_path, "b")) == searched(reference)


@pytest.mark.slow
def test_killed_inside_a_round_the_relaunch_replays_it_from_the_runs_on_disk(through, tmp_path):
    """The state is saved before a round is launched; a kill after some of its runs finished
    leaves outcomes unrecorded. Made here by erasing the last round's outcomes."""
    _, reference = through
    sweep(tmp_path, "b")
    state_file = tmp_path / "outputs" / "sweeps" / "b" / "boundary_state.json"
    state = json.loads(state_file.read_text())
    state["rounds"][-1]["outcomes"] = [None] * len(state["rounds"][-1]["outcomes"])
    state_file.write_text(json.dumps(state))
    before = finished(tmp_path, "b")
    r = sweep(tmp_path, "b")
    assert finished(tmp_path, "b") == before  # found complete on disk, not retrained
    assert "round 2: 1 run(s)" in r.stdout + r.stderr
    assert searched(result(tmp_path, "b")) == searched(reference)


@pytest.mark.slow
def test_killed_with_sigkill_mid_sweep_the_relaunch_finds_the_same(through, tmp_path):
    """A real kill: SIGKILL to the launch's process group once some runs are finished (wherever
    the sweep then is: inside a pack, between rounds, writing its state), then a relaunch."""
    import signal
    import subprocess
    import time

    _, reference = through
    args = [sys.executable, str(ROOT / "launch.py"), "-m", *SEARCH, *PACKED, *CELLS, "sweep_id=b"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tmp_path / "outputs" / "sweeps" / "b"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and \
            len(list(folder.glob("*/summary.json"))) < 7:
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it had finished
        pass
    proc.wait()
    before = finished(tmp_path, "b")
    assert 0 < len(before) < 8 or proc.returncode == 0  # killed mid-sweep (or it had finished)
    sweep(tmp_path, "b")
    after = finished(tmp_path, "b")
    assert {k: after[k] for k in before} == before  # no finished run trained again
    assert searched(result(tmp_path, "b")) == searched(reference)


@pytest.mark.slow
def test_a_grid_sweep_seeds_round_0_and_its_runs_are_not_trained_again(through, tmp_path):
    _, reference = through
    grid = launch(["-m", *PACKED, *CELLS, "frac=0.1,0.5", "seed=0", "sweep_id=grid"], tmp_path)
    assert grid.returncode == 0, grid.stderr[-2000:]
    sweep(tmp_path, "b", f"hydra.sweeper.reuse={tmp_path}/outputs/sweeps/grid")
    doc = result(tmp_path, "b")
    assert doc["reused"] == 4 and doc["runs_spent"] == reference["runs_spent"] - 4
    assert [r["interval"] for r in doc["rows"]] == [r["interval"] for r in reference["rows"]]
    assert [r["points"] for r in doc["rows"]] == [r["points"] for r in reference["rows"]]
    names = {x["folder"] for x in doc["runs"]}
    assert not any("frac=0.1," in n or "frac=0.5," in n for n in names)  # not launched here


@pytest.mark.slow
def test_a_run_that_fails_is_retried_once_then_unknown_never_a_no(through, tmp_path):
    """x+y at frac 0.5 cannot run: its folder holds another config's run (copied from x-y), so
    the folder refuses it, in round 0 and in its retry. The point stays unknown, the search goes
    round it, and the launch exits 1 naming the refused job."""
    ref_cwd, reference = through
    src = next((ref_cwd / "outputs" / "sweeps" / "b").glob("frac=0.5,*op=x-y,*"))
    dst = tmp_path / "outputs" / "sweeps" / "b" / src.name.replace("op=x-y", "op=x+y")
    __import__("shutil").copytree(src, dst)
    r = launch(["-m", *SEARCH, *PACKED, *CELLS, "sweep_id=b"], tmp_path)
    assert r.returncode == 1 and "refused" in r.stderr
    doc = result(tmp_path, "b")
    tries = [(x["round"], x["outcome"]) for x in doc["runs"] if x["cell"] == 0 and x["value"] == "0.5"]
    assert tries == [(0, "failed"), (1, "failed")]  # retried once, in the next round
    add = doc["rows"][0]
    assert add["status"] == "found" and add["interval"] == reference["rows"][0]["interval"]
    at = {p["value"]: p for p in add["points"]}
    assert at[0.5]["known"] == 0 and at[0.5]["outcome"] == "unknown"
    assert doc["rows"][1] == reference["rows"][1]  # the other cell is untouched


@pytest.mark.slow
def test_a_relaunch_with_another_search_is_refused(through, tmp_path):
    sweep(tmp_path, "b", "hydra.sweeper.max_rounds=1")
    r = launch(["-m", *SEARCH, *PACKED, *CELLS, "sweep_id=b", "hydra.sweeper.seeds=2"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "seeds" in r.stderr


def test_analysis_boundary_prints_the_table_and_draws_the_plot(through):
    cwd, _ = through
    r = __import__("subprocess").run(
        [sys.executable, "-m", "analysis", "boundary", "outputs/sweeps/b"], cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.startswith("| x")]
    assert len(lines) == 2 and "found" in lines[0] and "0.6" in lines[0] and "0.7" in lines[0]
    assert "nowhere" in lines[1]
    assert "0.1:0/1 0.5:0/1 0.6:0/1 0.7:1/1 0.9:1/1" in lines[0]
    out = cwd / "outputs" / "sweeps" / "b" / "analysis"
    assert any(p.suffix == ".png" and p.stat().st_size > 1000 for p in out.iterdir())
    csv = next(p for p in out.iterdir() if p.name.startswith("boundary_") and p.suffix == ".csv")
    import pandas as pd

    table = pd.read_csv(csv)
    assert list(table.op) == ["x+y", "x-y"] and table["frac from"].tolist()[0] == 0.6


# ------------------------------------------------------------------ up front, nothing written

BAD = [
    (["frac=0.3"], "frac=0.3: the boundary sweeper sets frac"),
    (["seed=0,1"], "the boundary sweeper sets seed"),
    (["hydra.sweeper.resolution=0.03"], "lo=0.1 is not a multiple of the resolution 0.03"),
    (["hydra.sweeper.direction=left"], "direction must be 'up' or 'down'"),
    (["hydra.sweeper.seeds=[0,a]"], "hydra.sweeper.seeds"),
    (["hydra.sweeper.k=3", "hydra.sweeper.seeds=2"], "k must lie in [1, 2]"),
    (["hydra.sweeper.outcome=maybe"], "hydra.sweeper.outcome=maybe"),
    (["hydra.sweeper.axis=optimizer.weight_decay", "hydra.sweeper.lo=0", "hydra.sweeper.hi=2",
      "hydra.sweeper.direction=down"],
     None),  # a valid axis: no error
]


@pytest.mark.parametrize("extra,line", BAD)
def test_bad_settings_are_one_line_before_anything_runs(extra, line, tmp_path):
    error, n = check(["-m", *SEARCH, *CELLS, *extra, "--dry-run"])
    if line is None:
        assert error is None and n == 2 * 3
    else:
        assert error is not None and line in error and "\n" not in error


def test_a_bad_value_in_a_cell_is_refused_and_nothing_is_written(tmp_path):
    r = launch(["-m", *SEARCH, *CELLS, "optimizer.lr=-1"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "lr" in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_dry_run_lists_round_0_and_the_worst_case(tmp_path):
    r = launch(["-m", *SEARCH, *CELLS, "hydra.sweeper.seeds=2", "--dry-run"], tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = [x for x in r.stdout.splitlines() if x.startswith("  ")]
    assert len(jobs) == 2 * 3 * 2  # cells x coarse points x seeds
    assert sum("frac=0.5" in j and "seed=1" in j for j in jobs) == 2
    # then at most 2 bisection rounds (gap 4 -> 2 -> 1) x 2 cells x 2 seeds
    assert "12 run(s) in round 0, at most 20 in all" in r.stdout
    assert not (tmp_path / "outputs").exists()


def test_an_optimized_metric_is_refused(tmp_path):
    r = launch(["-m", *SEARCH, *CELLS, "optimized_metric=grok_step"], tmp_path)
    assert r.returncode == 2 and "optimized_metric" in r.stderr
    assert not (tmp_path / "outputs" / "sweeps").exists() or not any(
        (tmp_path / "outputs" / "sweeps").rglob("summary.json"))


def _ret(status, value):
    r = JobReturn()
    r.status, r.return_value = status, value
    return r


@pytest.mark.parametrize("ret,rule,expected", [
    (_ret(JobStatus.COMPLETED, {"status": "complete", "verdict": "grokked"}), "grokked", "grokked"),
    (_ret(JobStatus.COMPLETED, {"status": "complete", "verdict": "generalised without delay"}),
     "generalised", "grokked"),
    (_ret(JobStatus.COMPLETED, {"status": "complete", "verdict": "generalised without delay"}),
     "grokked", "not_grokked"),
    (_ret(JobStatus.COMPLETED, {"status": "complete", "verdict": "did not generalise"}),
     "generalised", "not_grokked"),
    (_ret(JobStatus.FAILED, RuntimeError("out of memory")), "generalised", "failed"),
    (_ret(JobStatus.COMPLETED, {"status": "failed", "error": "x"}), "generalised", "failed"),
    (_ret(JobStatus.COMPLETED, 0.5), "generalised", "failed"),
])
def test_a_job_outcome_is_read_from_its_verdict_and_a_failure_is_never_a_no(ret, rule, expected):
    assert outcome(ret, rule) == expected


def test_the_report_opens_with_the_boundary_section(through, tmp_path):
    cwd, _ = through
    sys.path.insert(0, str(ROOT))
    from analysis.__main__ import main

    main(["report", str(cwd / "outputs" / "sweeps" / "b"), "--out", str(tmp_path)])
    page = next(Path(tmp_path).glob("report_*.html")).read_text()
    assert page.index('id="setup"') < page.index('id="boundary"') < page.index('<h2 id="pool-0"')
    assert ">found<" in page and ">nowhere<" in page and page.count("<svg") >= 2


@pytest.mark.parametrize("preset,cells,seeds", [("furuta_boundary", 35, 3),
                                                ("exponents_boundary", 81 * 3, 1)])
def test_the_boundary_presets_choose_the_sweeper_and_check_round_0(preset, cells, seeds):
    from launch import plan

    notes: list = []
    jobs, multirun, _ = plan(["-m", f"experiment={preset}"], notes)
    assert multirun and len(jobs) == cells * 5 * seeds  # the coarse grid 0.1, 0.3, ..., 0.9
    assert {o for j in jobs for o in j if o.startswith("frac=")} == \
        {"frac=0.1", "frac=0.3", "frac=0.5", "frac=0.7", "frac=0.9"}
    assert f"a boundary search of {cells} cell(s)" in notes[0]
    assert check(["-m", f"experiment={preset}"]) == (None, len(jobs))
    # the grid sweeper is still the default, and the command line still chooses
    assert check(["-m", "task=poly", "op=x+y", "frac=0.3,0.5"]) == (None, 2)


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_the_boundary_section_renders_in_headless_chromium(through, tmp_path):
    import subprocess

    from PIL import Image

    from analysis.__main__ import main

    cwd, _ = through
    main(["report", str(cwd / "outputs" / "sweeps" / "b"), "--out", str(tmp_path)])
    page = next(Path(tmp_path).glob("report_*.html"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
            "--v=0", "--window-size=1200,1400", f"--user-data-dir={tmp_path / 'profile'}"]
    r = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and [x for x in r.stderr.splitlines() if ":CONSOLE" in x] == []
    dom = r.stdout
    section = dom[dom.index('id="boundary"'):]
    assert section.index("<svg") < section.index("<table") and "op=x+y" in section
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    # the plot is on the first screen: the critical-value dot and bar of x+y in tab10's first
    # colour (an elementary op)
    blue = (31, 119, 180)
    n = sum(1 for p in img.getdata() if all(abs(a - b) <= 8 for a, b in zip(p, blue)))
    assert n > 100, n
    img.save(tmp_path.parent / "boundary_report_shot.png")
