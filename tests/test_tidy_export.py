"""`python -m analysis runs` and `analysis.load_sweep`: a sweep as numbers, a row per run; the grid's
CSV as numbers, a row per cell."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from pandas.api import types

import analysis
from analysis.__main__ import main

RECORDS = Path(__file__).parent / "fixtures" / "records"
GROKKED = {"verdict": "grokked", "memorisation_step": 400, "grok_step": 2650, "grok_delay": 2250,
           "best_test_acc": 0.9971278123504069, "onset_step": 2000, "phase": "grokking"}


@pytest.fixture
def sweep(tmp_path):
    """The 8 recorded runs (2 fracs x 2 seeds, twice), one of them edited to have grokked, and a
    copy of another run in a second folder: one run, counted once."""
    root = tmp_path / "sweep"
    for name in ("basic", "packed"):
        shutil.copytree(RECORDS / name, root / name)
    runs = sorted(p.parent for p in root.rglob("summary.json"))
    summary = json.loads((runs[0] / "summary.json").read_text())
    (runs[0] / "summary.json").write_text(json.dumps({**summary, **GROKKED}))
    shutil.copytree(runs[1], root / "copy" / runs[1].name)
    return root, runs


def test_runs_csv_round_trips_with_numbers_one_row_per_run(sweep, tmp_path, capsys):
    root, runs = sweep
    main(["runs", str(root), "--csv", str(tmp_path / "runs.csv")])
    out, err = capsys.readouterr()
    assert "8 run(s)" in out and "same run as" in err  # the copy is one line, not a row
    table = pd.read_csv(tmp_path / "runs.csv")
    assert len(table) == 8 and table.run.is_unique
    for col in ("steps", "seed", "p", "n_train", "model.d_model", "train.steps", "train.eval_every"):
        assert types.is_integer_dtype(table[col]), (col, table[col].dtype)
    for col in ("frac", "best_test_acc", "final_test_acc", "final_test_loss", "grok_step",
                "memorisation_step", "optimizer.lr", "end.gini_embed"):
        assert types.is_float_dtype(table[col]), (col, table[col].dtype)
    for col in ("verdict", "phase", "op", "model", "optimizer.name"):
        assert types.is_string_dtype(table[col]) and table[col].map(type).eq(str).all(), col
    grokked = table[table.run == str(runs[0])].iloc[0]
    assert grokked.verdict == "grokked" and grokked.grok_step == 2650 and grokked.phase == "grokking"
    assert grokked.best_test_acc == GROKKED["best_test_acc"]  # the exact float, not "100%"
    assert table.grok_step.isna().sum() == 7
    assert set(table.frac) == {0.4, 0.5, 0.6, 0.7} and set(table.seed) == {0, 1, 2, 3}
    assert (table.verdict == "did not generalise").sum() == 7
    last = json.loads((runs[0] / "metrics.jsonl").read_text().strip().splitlines()[-1])
    assert grokked["end.gini_embed"] == last["gini_embed"]
    assert json.loads(grokked["optimizer.betas"]) == [0.9, 0.98]  # a list as its JSON


def test_load_sweep_is_the_same_table_with_nullable_integers(sweep, tmp_path, capsys):
    root, runs = sweep
    frame = analysis.load_sweep(root)
    assert len(frame) == 8 and any("same run as" in line for line in frame.attrs["skipped"])
    assert str(frame.grok_step.dtype) == "Int64" and frame.grok_step.notna().sum() == 1
    assert str(frame.seed.dtype) == "Int64" and str(frame.early_stopped.dtype) == "boolean"
    main(["runs", str(root), "--csv", str(tmp_path / "runs.csv")])
    table = pd.read_csv(tmp_path / "runs.csv")
    assert list(table.columns) == list(frame.columns)
    assert table.best_test_acc.tolist() == frame.best_test_acc.tolist()


def test_runs_without_a_file_prints_a_short_preview(sweep, tmp_path, capsys):
    root, _ = sweep
    main(["runs", str(root)])
    out = capsys.readouterr().out
    assert out.startswith("8 run(s)") and "--csv FILE" in out and "load_sweep" in out
    assert "2650" in out and "grokking" in out and len(out.splitlines()) < 20
    assert not (root / "analysis").exists()  # nothing written


def test_parquet_without_pyarrow_is_one_line_exit_2(sweep, tmp_path, monkeypatch, capsys):
    root, _ = sweep
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    with pytest.raises(SystemExit) as e:
        main(["runs", str(root), "--parquet", str(tmp_path / "runs.parquet")])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: parquet needs pyarrow: pip install grok[parquet]\n"
    assert not (tmp_path / "runs.parquet").exists()


def test_runs_parquet_keeps_the_dtypes(sweep, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    root, _ = sweep
    main(["runs", str(root), "--parquet", str(tmp_path / "runs.parquet")])
    table = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(table) == 8 and str(table.grok_step.dtype) == "Int64"
    assert types.is_float_dtype(table.frac) and types.is_string_dtype(table.verdict)


@pytest.mark.parametrize("args, says", [
    (["runs", "{tmp}/nowhere"], "error: no complete runs in {tmp}/nowhere"),
    (["runs", "{root}", "--csv", "{tmp}/no/such/folder/runs.csv"],
     "error: cannot write {tmp}/no/such/folder/runs.csv"),
])
def test_runs_bad_input_is_one_line_exit_2(sweep, tmp_path, capsys, args, says):
    root, _ = sweep
    fill = {"tmp": tmp_path, "root": root}
    with pytest.raises(SystemExit) as e:
        main([a.format(**fill) for a in args])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("skipped ")]
    assert len(err) == 1 and err[0].startswith(says.format(**fill))


def test_grid_csv_holds_numbers_a_row_per_cell(sweep, tmp_path, capsys):
    root, _ = sweep
    main(["grid", str(root), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "✓" in out  # the terminal keeps the display table
    [csv] = (tmp_path / "out").glob("grid_*.csv")
    table = pd.read_csv(csv)
    assert list(table.columns[:3]) == ["frac", "op", "kind"]
    assert table.frac.tolist() == [0.4, 0.5, 0.6, 0.7] and set(table.op) == {"x+y"}
    assert set(table.kind) == {"elementary"}
    for col in ("n_seeds", "n_grokked", "n_no_delay"):
        assert types.is_integer_dtype(table[col]), col
    assert table.n_seeds.tolist() == [2, 2, 2, 2] and table.n_grokked.sum() == 1
    cell = table[table.n_grokked == 1].iloc[0]
    assert cell.share_generalised == 0.5 and cell.median_grok_step == 2650
    assert cell.best_test_acc == GROKKED["best_test_acc"]
    assert table.median_grok_step.isna().sum() == 3
    assert not any("%" in str(v) or "✓" in str(v) for v in table.to_numpy().ravel())
