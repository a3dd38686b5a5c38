"""What a new user tripped on (issue 19, item 7): each line says what it means, once."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import ROOT, TINY, launch

from analysis.__main__ import _write_tables, exponent_markdown
from analysis.__main__ import main as analysis_main
from analysis.tables import grid, to_markdown
from hydra_plugins.grok_launchers.packed_launcher import pack_limit
from launch import outcome

RECORDS = Path(__file__).parent / "fixtures" / "records"


def launch_without_slurm(args, cwd, bin_dir):
    """launch.py with a PATH that holds no sbatch or srun (this machine may have a SLURM)."""
    bin_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(bin_dir), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("launcher", ["slurm", "slurm_packed"])
def test_a_slurm_launcher_without_slurm_is_one_line_exit_2(launcher, tmp_path):
    r = launch_without_slurm(["-m", f"hydra/launcher={launcher}", "seed=0,1", *TINY,
                              f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, tmp_path / "bin")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.splitlines() == [
        f"error: hydra/launcher={launcher}: no sbatch or srun on PATH, so no SLURM to submit to from "
        f"this machine (run it on the cluster's login node, or hydra/launcher=pool to run here)"]
    assert "Traceback" not in r.stdout + r.stderr and not (tmp_path / "sweep").exists()


def test_a_dry_run_of_a_slurm_sweep_without_slurm_lists_the_jobs_and_says_so(tmp_path):
    r = launch_without_slurm(["-m", "hydra/launcher=slurm", "seed=0,1", "--dry-run"], tmp_path,
                             tmp_path / "bin")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 job(s), every config valid; nothing run" in r.stdout
    assert "note: hydra/launcher=slurm: no sbatch or srun on PATH" in r.stdout


def fake_slurm(bin_dir: Path, scontrol: str) -> Path:
    """sbatch and srun that must never run, and an scontrol whose `ping` is `scontrol` (sh)."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in [("sbatch", "echo ran >> $0.ran; exit 1"), ("srun", "exit 1"), ("scontrol", scontrol)]:
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("ping, why", [
    ("echo 'scontrol: fatal: Could not establish a configuration source' >&2; exit 1",
     "scontrol: fatal: Could not establish a configuration source"),
    ("echo 'Slurmctld(primary) at head is DOWN'; exit 1", "Slurmctld(primary) at head is DOWN"),
], ids=["no-config", "controller-down"])
def test_a_slurm_that_does_not_answer_is_one_line_exit_2_before_any_sbatch(ping, why, tmp_path):
    """sbatch on PATH but no SLURM behind it: once submitit's FailedJobError traceback after the
    check; now `scontrol ping` is asked up front, and nothing is submitted or written."""
    bin_dir = fake_slurm(tmp_path / "bin", ping)
    r = launch_without_slurm(["-m", "hydra/launcher=slurm", "seed=0,1", *TINY,
                              f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, bin_dir)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.splitlines() == [
        f"error: hydra/launcher=slurm: SLURM does not answer from this machine (`scontrol ping`: {why}); "
        f"start it or run on the cluster's login node, or hydra/launcher=pool to run here"]
    assert not (bin_dir / "sbatch.ran").exists() and not (tmp_path / "sweep").exists()


def test_the_end_of_a_run_in_words():
    grokked = {"verdict": "grokked", "grok_step": 2650, "best_test_acc": 0.9971278123504069}
    assert outcome(grokked) == "grokked at step 2650, best test acc 0.997"
    failed = {"verdict": "did not generalise", "grok_step": None, "best_test_acc": 0.0377}
    assert outcome(failed) == "did not generalise, best test acc 0.038"


def test_a_single_run_ends_without_none_and_with_a_rounded_accuracy(tmp_path):
    r = launch([*TINY, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "None" not in r.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"run folder: {tmp_path / 'run'} ({outcome(summary)})"
    assert re.search(r"best test acc \d\.\d{3}\)$", last)
    [line] = [x for x in r.stdout.splitlines() if "memorised at" in x]
    step = summary["grok_step"]
    assert f"grok step {'-' if step is None else step}, best test acc {summary['best_test_acc']:.3f}" in line


def test_a_packed_sweep_of_one_run_says_so_and_names_its_loggers(tmp_path):
    r = launch(["-m", "hydra/launcher=packed", *TINY, "train.steps=20", "logger=none",
                f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 job in 1 pack of at most 16 runs (max_pack=null: on a CPU)" in r.stdout
    assert "[grok.train][INFO] - pack of 1 run: " in r.stdout
    assert "(s)" not in r.stdout and "auto" not in r.stdout
    assert "[HYDRA]" not in r.stdout  # the training's lines are not Hydra's


def test_pack_limit_says_what_null_resolved_to():
    cpu = (SimpleNamespace(train=SimpleNamespace(device="cpu"), frac=0.5), None)
    assert pack_limit(None, [cpu, cpu], [[0, 1]]) == "16 runs (max_pack=null: on a CPU)"
    assert pack_limit(4, [cpu], [[0]]) == "4 runs" and pack_limit(1, [cpu], [[0]]) == "1 run"


def test_the_exponent_table_prints_steps_as_whole_numbers(tmp_path, capsys):
    root = tmp_path / "sweep"
    shutil.copytree(RECORDS / "basic", root)
    first = sorted(root.glob("*/summary.json"))[0]
    summary = json.loads(first.read_text())
    first.write_text(json.dumps({**summary, "verdict": "grokked", "memorisation_step": 400,
                                 "grok_step": 2650, "best_test_acc": 0.9971278123504069}))
    analysis_main(["exponents", str(root), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "2650" in out and "e+03" not in out
    table = pd.DataFrame({"a": [1, 2], "grok_step": [2650.0, float("nan")], "best_test_acc": [0.99712, 0.5]})
    rows = exponent_markdown(table).splitlines()[2:]
    assert rows[0].split("|")[2].strip() == "2650" and rows[1].split("|")[2].strip() == "-"
    assert rows[0].split("|")[3].strip() == "0.997"


def test_mixture_and_transfer_tables_are_headed_by_their_keys(tmp_path, capsys):
    from test_mixture import _record

    _record(tmp_path / "a0", "{x+y, xy}", 0, {"x+y": ("grokked", 1.0), "xy": ("grokked", 1.0)})
    analysis_main(["mixtures", str(tmp_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert f"{tmp_path}: p=23 model=nanda\n" in out and "{'p'" not in out
    _write_tables([({"p": 59, "model": "nanda", "frac": 0.3}, pd.DataFrame({"x": [1]}))], "transfer",
                  "legend", [tmp_path], tmp_path / "t")
    assert "p=59 model=nanda frac=0.3\n" in capsys.readouterr().out


def test_the_markdown_grid_names_the_kind_of_every_op():
    runs = pd.DataFrame({"op": ["x+y", "x-y", "x^2+y^2"], "op_pretty": ["x+y", "x-y", "x^2+y^2"],
                         "task": ["poly"] * 3, "frac": [0.5] * 3, "seed": [0] * 3,
                         "verdict": ["grokked"] * 3, "best_test_acc": [1.0] * 3})
    lines = to_markdown(grid(runs)).splitlines()
    kinds = [c.strip() for c in lines[2].strip("|").split("|")]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["frac", "x+y", "x-y", "x^2+y^2"]
    assert kinds == ["kind", "elementary", "elementary", "sum of powers"]
    rows = to_markdown(grid(runs, rows="op", cols="frac")).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["elementary", "elementary", "sum of powers"]


def test_help_is_short_and_lists_the_launchers_and_sweepers(tmp_path):
    r = launch(["--help"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) < 60 and "d_model:" not in r.stdout  # the config is `--cfg job`'s
    groups = {line.split(":")[0]: line.split(":", 1)[1] for line in lines if re.match(r"^[\w/]+: ", line)}
    launchers = {name.stem for name in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml")}
    assert launchers <= {o.strip() for o in groups["hydra/launcher"].split(",")}
    assert {"grok", "boundary"} <= {o.strip() for o in groups["hydra/sweeper"].split(",")}
    for group in ("model", "optimizer", "task", "experiment"):
        assert group in groups, group
    assert "--dry-run" in r.stdout and "--cfg job" in r.stdout
