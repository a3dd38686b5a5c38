"""Sweeps to tables and plots, checked against the runs' own summaries."""

import json
import shutil
import struct
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import TINY, launch

from analysis.__main__ import main as analysis_main
from analysis.collate import from_wandb, latest_sweep, load_runs
from analysis.plots import heatmap
from analysis.tables import cell, exponent_table, generalised_share, grid, to_markdown
from grok.figures import plot_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real tiny sweep: 2 ops x 2 fracs x 2 seeds. x+y at p=23 fails to generalise in
    300 steps, x^2+y^2 at frac 0.7 generalises: both kinds of cell appear."""
    root = tmp_path_factory.mktemp("analysis")
    r = launch(["-m", "task=poly", "op=x+y,x2+y2", "frac=0.5,0.7", "seed=0,1", *TINY,
                "train.steps=300", "train.eval_every=20", "logger=none",
                f"hydra.sweep.dir={root / 'sweep'}"], cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "sweep"


def summaries(sweep_dir):
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]


@pytest.mark.slow
def test_grid_cells_match_the_runs_summaries(sweep):
    runs, problems = load_runs(sweep)
    assert problems == [] and len(runs) == 8
    table = grid(runs)
    kinds = dict(zip(table.columns.get_level_values("op"), table.columns.get_level_values("kind")))
    assert kinds == {"x+y": "elementary", "x^2+y^2": "sum of powers"}
    expected = {}
    for s in summaries(sweep):
        expected.setdefault((f"{s['frac']:g}", s["op_pretty"]), []).append(s)
    assert len(expected) == 4
    seen_not_generalised = False
    for (frac, op), group in expected.items():
        got = table.loc[frac, (kinds[op], op)]
        verdicts = [s["verdict"] for s in group]
        if all(v == "grokked" for v in verdicts):
            assert got == "✓ 2/2"
        elif all(v == "did not generalise" for v in verdicts):
            seen_not_generalised = True
            accs = pd.Series([100 * s["best_test_acc"] for s in group])
            assert got == f"{accs.mean():.0f}±{accs.std(ddof=0):.0f}%"
        else:
            n_grok = verdicts.count("grokked")
            n_nd = verdicts.count("generalised without delay")
            assert (f"✓ {n_grok}/2" in got) == bool(n_grok) and (f"= {n_nd}/2" in got) == bool(n_nd)
    assert seen_not_generalised, "the sweep should contain a did-not-generalise cell"
    md = to_markdown(table)
    assert "sum of powers" in md and "x^2+y^2" in md and "0.7" in md
    assert to_markdown(grid(runs, rows="op")).count("\n") == 3  # header, rule, 2 op rows


def test_grok_step_cells():
    from analysis.tables import grok_step_cell

    def g(*rows):
        return pd.DataFrame([{"verdict": v, "grok_step": s, "best_test_acc": a} for v, s, a in rows])
    assert grok_step_cell(g(("grokked", 900, 1.0))) == "900"
    assert grok_step_cell(g(("grokked", 900, 1.), ("grokked", 1500, 1.), ("did not generalise", None, .3))) \
        == "1200 (2/3)"
    assert grok_step_cell(g(("did not generalise", None, .34))) == "34%"


def test_cell_aggregation_rules():
    def g(*rows):
        return pd.DataFrame([{"verdict": v, "best_test_acc": a} for v, a in rows])
    assert cell(g(("grokked", 1.0))) == "✓"
    assert cell(g(("grokked", 1.0), ("grokked", 1.0), ("grokked", 1.0))) == "✓ 3/3"
    assert cell(g(("grokked", 1.0), ("did not generalise", .3))) == "✓ 1/2"
    assert cell(g(("generalised without delay", 1.0))) == "="
    assert cell(g(("did not generalise", .34))) == "34%"
    assert cell(g(("did not generalise", .3), ("did not generalise", .5))) == "40±10%"
    assert generalised_share(g(("grokked", 1.0), ("did not generalise", .3))) == .5
    assert generalised_share(g(("generalised without delay", 1.0), ("grokked", 1.0))) == 1.0
    assert generalised_share(g(("did not generalise", .4))) == 0.0   # its accuracy: the text


@pytest.mark.slow
def test_corrupt_and_half_written_folders_are_reported_and_skipped(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    jobs = sorted(p for p in copy.iterdir() if (p / "config.yaml").exists())[:4]
    (jobs[0] / "summary.json").write_text('{"status": "compl')          # torn write
    (jobs[1] / "summary.json").unlink()                                 # killed mid-run
    (jobs[2] / "config.yaml").write_text("p: [unclosed\n")              # corrupt config
    (jobs[3] / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    runs, problems = load_runs(copy, tmp_path / "missing")
    assert len(runs) == 4
    joined = "\n".join(problems)
    for job in jobs:
        assert str(job) in joined
    assert "boom" in joined and "missing" in joined
    assert not grid(runs).empty


@pytest.mark.slow
def test_cli_writes_table_files_and_pngs_of_the_expected_size(sweep, tmp_path, capsys):
    analysis_main(["grid", str(sweep), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "x^2+y^2" in printed and "8 runs, 2 seed(s)" in printed
    for ext in ("csv", "html", "md", "png"):
        [table] = tmp_path.glob(f"grid_sweep-*_frac-by-op.{ext}")
        assert table.stat().st_size > 0
    png = tmp_path / "run.png"
    plot_run(min(p for p in sweep.iterdir() if (p / "config.yaml").exists()), png, size=(12, 4), dpi=50)
    assert png_size(png) == (600, 200)
    runs, _ = load_runs(sweep)
    heatmap(grid(runs, agg=generalised_share), grid(runs), tmp_path / "h.png", dpi=50)
    assert png_size(tmp_path / "h.png")[0] > 100


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_grid_on_the_readme_main_command(tmp_path):
    """`make grid-table` right after `python launch.py`: the single run is the latest 'sweep'."""
    r = launch([*TINY, "logger=none"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert latest_sweep(tmp_path / "outputs") == tmp_path / "outputs" / "runs"
    r = launch_analysis(["grid", "--outputs", str(tmp_path / "outputs")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "x+y" in r.stdout and "elementary" in r.stdout


def launch_analysis(args, cwd):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "analysis", *args], cwd=cwd, capture_output=True,
                          text=True, env={**__import__("os").environ,
                                          "PYTHONPATH": str(__import__("conftest").ROOT)})


def test_from_wandb_reads_the_same_schema_through_the_api_boundary():
    calls = []

    class FakeApi:
        def runs(self, path, filters=None):
            calls.append((path, filters))
            return [SimpleNamespace(
                id="abc", config={"op": "x2+y2", "p": 97, "frac": 0.5, "seed": 2,
                                  "task": {"name": "poly"}, "model": {"name": "furuta"},
                                  "optimizer": {"name": "adamw"}, "sweep_id": "s1", "_wandb": {}},
                summary={"status": "complete", "verdict": "grokked", "memorisation_step": 100,
                         "grok_step": 900, "best_test_acc": 1.0, "final_test_acc": 1.0,
                         "steps": 1000, "wall_time_s": 3.0}),
                SimpleNamespace(id="crashed", config={}, summary={})]

    df = from_wandb("me/grok", group="s1", api=FakeApi())
    assert calls == [("me/grok", {"group": "s1"})]
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.op, row.op_pretty, row.p, row.model, row.verdict, row.grok_step) == \
        ("x^2+y^2", "x^2+y^2", 97, "furuta", "grokked", 900)
    assert row.run == "wandb:me/grok/abc"
    local, _ = load_runs("/nonexistent")
    assert list(df.columns) == list(local.columns)


def test_exponent_table_rows_and_uniformity():
    runs = pd.DataFrame([
        {"op": "x^2+y^3", "p": 11, "verdict": "grokked", "grok_step": 500, "best_test_acc": 1.0},
        {"op": "x^2+y^3", "p": 11, "verdict": "grokked", "grok_step": 700, "best_test_acc": 1.0},
        {"op": "x^2+y^2", "p": 11, "verdict": "did not generalise", "grok_step": None,
         "best_test_acc": .4},
        {"op": "x^2+xy+y^2", "p": 11, "verdict": "grokked", "grok_step": 1, "best_test_acc": 1.},
    ])
    t = exponent_table(runs)
    assert list(zip(t.a, t.b)) == [(2, 2), (2, 3)]
    assert list(t.grokked) == ["0/1", "2/2"] and t.grok_step.iloc[1] == 600
    squares = {(x * x + y * y) % 11 for x in range(11) for y in range(11)}
    assert t.n_labels.iloc[0] == len(squares)
    assert 0 < t.label_entropy_ratio.iloc[0] <= 1


def test_cli_grid_from_wandb_uses_the_api(monkeypatch, tmp_path, capsys):
    import analysis.collate as collate

    seen = {}

    def fake(path, group=None, api=None, problems=None):
        seen.update(path=path, group=group, api=api)
        return pd.DataFrame([{"sweep_id": "g", "task": "poly", "op": "x^2+y^2", "op_pretty": "x^2+y^2",
                              "p": 97, "frac": 0.5, "seed": 0, "model": "furuta",
                              "optimizer": "adamw", "verdict": "grokked", "best_test_acc": 1.0}])

    monkeypatch.setattr(collate, "from_wandb", fake)
    monkeypatch.setattr("wandb.Api", lambda: "api")  # an API key is checked before any work
    analysis_main(["grid", "--wandb", "me/grok", "--group", "g", "--out", str(tmp_path)])
    assert seen == {"path": "me/grok", "group": "g", "api": "api"}
    assert "✓" in capsys.readouterr().out
    assert len(list(tmp_path.glob("grid_wandb_me_grok_g-*_frac-by-op.csv"))) == 1
