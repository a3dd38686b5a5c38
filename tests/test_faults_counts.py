"""Counted once, never dropped without a word (issue 20, classes 8 and 9).

8. A run counts once by its identity (grok.record.identity.run_key), wherever analysis finds it:
   a folder named twice, two copies of a sweep under one folder, one op in two spellings; of two
   copies the one with more steps counts and the other is `skipped <folder>: same run as ...`.
   A sweep with two jobs that are one run (`op=x+y,y+x,x+1y`) is refused before anything runs.
9. A sweep kept under a folder named `wandb` or `.hydra` is read; "the latest sweep" is the one
   launched last, not the one analysed last; a `$` in a sweep's path or an axis value is drawn
   as written (matplotlib's mathtext never sees it).

Every test here failed on a9ee751 unless its docstring says "passed before" (a guard that the fix
keeps what worked). Imports of what the fix added stay inside the tests, so the file runs there.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY, launch

from analysis.__main__ import main as analysis_main
from analysis.collate import latest_sweep, load_runs

SWEEP = ["task=poly", "op=x2+y2", "seed=0,1", *TINY, "train.steps=20", "logger=none"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real tiny sweep of two seeds (two run folders, two runs)."""
    root = tmp_path_factory.mktemp("counts")
    r = launch(["-m", *SWEEP, f"hydra.sweep.dir={root / 'sweep'}"], cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "sweep"


def jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt", ".lock", "analysis"))
    return dst


def skipped(err: str) -> dict[str, str]:
    """{folder: why} of the `skipped <folder>: <why>` lines."""
    out = {}
    for line in err.splitlines():
        if line.startswith("skipped "):
            where, _, why = line[len("skipped "):].partition(": ")
            out[where] = why
    return out


def edit_yaml(path: Path, **changes):
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


def edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# -- 8. counted twice ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra", ["job", "sweep"], ids=["grid S S/job", "grid S S"])
def test_a_folder_named_twice_counts_once(sweep, tmp_path, capsys, extra):
    """`analysis grid S S/<job>` and `grid S S` pooled the job's run twice, as two seeds."""
    again = jobs(sweep)[0] if extra == "job" else sweep
    runs, problems = load_runs(sweep, again)
    assert len(runs) == 2 and sorted(runs.seed) == [0, 1] and problems == []
    analysis_main(["grid", str(sweep), str(again), "--out", str(tmp_path)])
    printed, err = capsys.readouterr()
    assert "2 runs, 2 seed(s)" in printed and "skipped" not in err


def test_two_copies_of_a_sweep_under_one_folder_count_once(sweep, tmp_path, capsys):
    """Two copies of a sweep (a backup, a sweep synced twice) pooled each run as two seeds."""
    a, b = copy_sweep(sweep, tmp_path / "all" / "a"), copy_sweep(sweep, tmp_path / "all" / "b")
    runs, problems = load_runs(tmp_path / "all")
    assert len(runs) == 2 and sorted(runs.seed) == [0, 1]
    assert {Path(r).parent for r in runs.run} == {a}           # the first found, where they tie
    assert sorted(problems) == sorted(f"{b / j.name}: same run as {a / j.name}" for j in jobs(sweep))
    analysis_main(["grid", str(tmp_path / "all"), "--out", str(tmp_path / "out")])
    printed, err = capsys.readouterr()
    assert "2 runs, 2 seed(s)" in printed
    assert skipped(err) == {str(b / j.name): f"same run as {a / j.name}" for j in jobs(sweep)}


def test_of_two_copies_the_one_with_more_steps_counts(sweep, tmp_path):
    a, b = copy_sweep(sweep, tmp_path / "a"), copy_sweep(sweep, tmp_path / "b")
    longer = b / jobs(sweep)[0].name
    edit_json(longer / "summary.json", steps=40, best_test_acc=0.5)  # continued to a longer budget
    runs, problems = load_runs(a, b)
    assert len(runs) == 2
    row = runs[runs.run == str(longer)]
    assert len(row) == 1 and row.best_test_acc.item() == 0.5
    assert f"{a / longer.name}: same run as {longer} (which has more steps)" in problems
    assert f"{b / jobs(sweep)[1].name}: same run as {a / jobs(sweep)[1].name}" in problems


def test_a_bad_copy_never_hides_the_good_one(sweep, tmp_path):
    """A copy that cannot be counted (bad verdict) is skipped for that reason, and the good copy
    counts, even where the bad one claims more steps."""
    a, b = copy_sweep(sweep, tmp_path / "a"), copy_sweep(sweep, tmp_path / "b")
    bad = b / jobs(sweep)[0].name
    edit_json(bad / "summary.json", steps=400, verdict="maybe")
    runs, problems = load_runs(a, b)
    assert str(a / bad.name) in set(runs.run) and len(runs) == 2
    assert any(p.startswith(f"{bad}: bad verdict 'maybe'") for p in problems)


@pytest.mark.parametrize("spelling", ["y2+x2", "x2+1y2", "x2+24y2"])
def test_one_op_in_two_spellings_counts_once(sweep, tmp_path, capsys, spelling):
    """`op=x2+y2` in one folder and `op=y2+x2` (or x2+24y2 at p=23) in another: the same run,
    counted as two seeds before."""
    a = copy_sweep(sweep, tmp_path / "s" / "a")
    other = tmp_path / "s" / "b"
    shutil.copytree(jobs(sweep)[0], other)
    edit_yaml(other / "config.yaml", op=spelling)                 # as a launch with that spelling
    edit_json(other / "summary.json", op=spelling)
    runs, problems = load_runs(tmp_path / "s")
    assert len(runs) == 2 and sorted(runs.seed) == [0, 1]
    assert problems == [f"{other}: same run as {a / jobs(sweep)[0].name}"]


def test_another_op_is_another_run(sweep, tmp_path):
    """x2+2y2 is another op (passed before: a guard that only one op is one run)."""
    copy_sweep(sweep, tmp_path / "s" / "a")
    other = tmp_path / "s" / "b"
    shutil.copytree(jobs(sweep)[0], other)
    edit_yaml(other / "config.yaml", op="x2+2y2")
    edit_json(other / "summary.json", op="x2+2y2")
    runs, problems = load_runs(tmp_path / "s")
    assert len(runs) == 3 and problems == []


def test_plots_draw_each_folder_once(sweep, tmp_path, capsys):
    """`plots S S/<job>` drew the job twice; copies elsewhere are still drawn, each its own file."""
    copy = copy_sweep(sweep, tmp_path / "copy")
    analysis_main(["plots", str(sweep), str(jobs(sweep)[0]), str(copy), "--out", str(tmp_path / "p")])
    printed = capsys.readouterr().out.split()
    assert len(printed) == 4 and len(set(printed)) == 4


SAME_RUN = [
    ["task=poly", "op=x+y,y+x,x+1y", "p=23"],
    ["task=poly", "op=x*y,yx", "p=23"],
    ["task=poly", "op=x2+y2,y2+x2", "p=23"],
    ["task=poly", "op=x+y,x+24y", "p=23"],                         # one op mod 23
    ["task=poly", "op=x+y,x23+y", "p=23"],                         # x^23 = x mod 23
    ["task=mixture", "ops=[x+y,x*y],[y+x,yx]", "p=23"],
]


@pytest.mark.parametrize("args", SAME_RUN, ids=" ".join)
def test_a_sweep_with_two_jobs_that_are_one_run_is_refused(args):
    from launch import check

    error, _ = check(["-m", *args])
    assert error is not None and "\n" not in error, error
    assert error.startswith("jobs 0 and 1 of the sweep are the same run (") and error.endswith("drop one")


@pytest.mark.parametrize("args", [
    ["task=poly", "op=x+y,x-y", "p=23"],
    ["task=poly", "op=x+y,x+24y", "p=29"],                         # another op mod 29
    ["task=mixture", "ops=[x+y,x*y],[x*y,x+y]", "p=23"],            # op tokens in another order
], ids=" ".join)
def test_different_runs_still_sweep(args):
    """Passed before: a guard that only one run is refused."""
    from launch import check

    error, n = check(["-m", *args])
    assert error is None and n == 2, error


def test_the_launch_refuses_them_before_anything_is_written(tmp_path):
    r = launch(["-m", "task=poly", "op=x+y,y+x,x+1y", *TINY, "train.steps=20", "logger=none"],
               cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0] == ("error: jobs 0 and 1 of the sweep are the same run (op=x+y and op=y+x "
                        "train the same thing); drop one")
    assert list(tmp_path.iterdir()) == []


def test_runs_read_from_wandb_count_once_by_identity():
    """Two W&B runs of one run (a re-run, a second sync, an op spelled `y+x`) are one row: the
    one with more steps, the other named `same run as`. A different seed is another run."""
    from types import SimpleNamespace

    from analysis.collate import from_wandb

    def wb(id_, op, seed, steps):
        config = {"op": op, "p": 23, "frac": 0.5, "seed": seed, "task": {"name": "add"},
                  "model": {"name": "nanda"}, "optimizer": {"name": "adamw"}}
        summary = {"status": "complete", "verdict": "grokked", "memorisation_step": 10,
                   "grok_step": 50, "best_test_acc": 1.0, "final_test_acc": 1.0, "steps": steps}
        return SimpleNamespace(id=id_, config=config, summary=summary)

    class Api:
        def runs(self, path, filters=None):
            return [wb("a", "x+y", 0, 100), wb("b", "y+x", 0, 200), wb("c", "x+y", 0, 100),
                    wb("d", "x+y", 1, 100)]

    problems = []
    df = from_wandb("me/grok", api=Api(), problems=problems)
    assert sorted(df.run) == ["wandb:me/grok/b", "wandb:me/grok/d"]
    assert sorted(problems) == ["wandb:me/grok/a: same run as wandb:me/grok/b (which has more steps)",
                                "wandb:me/grok/c: same run as wandb:me/grok/b"]


# -- 9. dropped without a word -------------------------------------------------------------------

@pytest.mark.parametrize("under", ["wandb", ".hydra", "wandb/run-1", "x/.hydra/y"])
def test_a_sweep_under_a_folder_named_wandb_or_hydra_is_read(sweep, tmp_path, capsys, under):
    """Every run vanished ("no complete runs", no skipped line) under such a folder."""
    copy = copy_sweep(sweep, tmp_path / under / "sweep")
    runs, problems = load_runs(copy)
    assert len(runs) == 2 and problems == []
    analysis_main(["grid", str(copy), "--out", str(tmp_path / "out")])
    assert "2 runs, 2 seed(s)" in capsys.readouterr().out


def test_runs_kept_in_a_wandb_folder_below_the_one_named_are_read(sweep, tmp_path):
    """`analysis grid data` with the sweep at data/wandb/sweeps/s: W&B's folder is wandb/run-*."""
    copy_sweep(sweep, tmp_path / "data" / "wandb" / "sweeps" / "s")
    runs, problems = load_runs(tmp_path / "data")
    assert len(runs) == 2 and problems == []


def test_hydra_and_wandb_copies_inside_a_run_folder_are_no_runs(sweep, tmp_path):
    """Passed before: the copies of a run's config that Hydra and W&B keep inside its folder are
    still no runs of their own (nor a `skipped` line)."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    job = jobs(copy)[0]
    for inner in ("wandb/run-20261207_120000-abc123/files", "wandb/offline-run-20261207_1-x/files",
                  "wandb/latest-run/files", ".hydra"):
        (job / inner).mkdir(parents=True, exist_ok=True)
        shutil.copy(job / "config.yaml", job / inner / "config.yaml")
    runs, problems = load_runs(copy)
    assert len(runs) == 2 and problems == []


def _launched(sweep_dir: Path, when: float) -> None:
    os.utime(sweep_dir / "multirun.yaml", (when, when))
    os.utime(sweep_dir, (when, when))


def test_the_latest_sweep_is_the_one_launched_last_not_analysed_last(sweep, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    old = copy_sweep(sweep, outputs / "sweeps" / "first")
    new = copy_sweep(sweep, outputs / "sweeps" / "second")
    _launched(old, 1_700_000_000)
    _launched(new, 1_700_000_100)
    assert latest_sweep(outputs) == new
    analysis_main(["grid", str(old)])                              # writes first/analysis/
    capsys.readouterr()
    assert (old / "analysis").is_dir()
    assert latest_sweep(outputs) == new
    analysis_main(["grid", "--outputs", str(outputs)])
    assert f"{new}: 2 runs" in capsys.readouterr().out


def test_the_latest_sweep_by_its_default_id_without_multirun_yaml(sweep, tmp_path):
    outputs = tmp_path / "outputs"
    old = copy_sweep(sweep, outputs / "sweeps" / "2026-01-02_03-04-05-000001")
    new = copy_sweep(sweep, outputs / "sweeps" / "2026-01-03_03-04-05-000001")
    for d in (old, new):
        (d / "multirun.yaml").unlink()
    (old / "analysis").mkdir()                                     # analysed after new was made
    os.utime(new, (1_700_000_000, 1_700_000_000))
    assert latest_sweep(outputs) == new


@pytest.mark.parametrize("name", ["cost$_$sweep", "$\\nope$"])
def test_a_dollar_in_the_sweep_path_is_drawn_as_written(sweep, tmp_path, capsys, name):
    """matplotlib's mathtext parsed `$_$` of the heatmap's title and failed (grid and report)."""
    copy = copy_sweep(sweep, tmp_path / name)
    analysis_main(["grid", str(copy), "--out", str(tmp_path / "g")])
    assert "2 runs, 2 seed(s)" in capsys.readouterr().out
    [png] = (tmp_path / "g").glob("grid_*.png")
    assert png.stat().st_size > 1000
    analysis_main(["report", str(copy), "--out", str(tmp_path / "r")])
    [page] = (tmp_path / "r").glob("report_*.html")
    assert name.replace("$", "") in page.read_text().replace("$", "")


def test_a_dollar_in_an_axis_value_is_drawn_as_written(sweep, tmp_path, capsys):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    for job, project in zip(jobs(copy), ("$\\nope$", "a$_$b")):
        config = yaml.safe_load((job / "config.yaml").read_text())
        config["logger"]["project"] = project
        (job / "config.yaml").write_text(yaml.safe_dump(config))
    analysis_main(["grid", str(copy), "--rows", "logger.project", "--out", str(tmp_path / "g")])
    printed = capsys.readouterr().out
    assert "$\\nope$" in printed and "a$_$b" in printed
    assert [p.stat().st_size > 1000 for p in (tmp_path / "g").glob("grid_*.png")] == [True]
    analysis_main(["report", str(copy), "--rows", "logger.project", "--out", str(tmp_path / "r")])
    assert len(list((tmp_path / "r").glob("report_*.html"))) == 1
