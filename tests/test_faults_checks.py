"""Input checked up front (issue 20, class 11, and the `sweep_id` part of class 2): values that
passed `--dry-run` and then failed after writing (a traceback, "File name too long", a folder
outside outputs/) are one line naming the value, exit status 2, nothing written. Two launches
of one sweep at once: the one that finds a job in use says so in one line, not a traceback.

Every test here failed on a9ee751 unless its docstring says "passed before" (a guard that the fix
keeps what worked). Imports of what the fix added stay inside the tests, so the file runs there.
"""

import os
from pathlib import Path

import pytest
import torch
from conftest import TINY, in_use, launch

LONG = "a" * 300
SMALL = [*TINY, "train.steps=20", "logger=none"]

# (command line, text the one error line must contain)
REFUSED = [
    # init.freeze: nothing left to train
    (["init.freeze=[all]"], "init.freeze=['all']: freezes every parameter"),
    (["init.freeze=[embed,transformer,unembed]"], "freezes every parameter"),
    (["init.freeze=[all_but_unembed,W_U]"], "freezes every parameter"),
    # the packed and pool launchers' own values
    (["-m", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=abc"],
     "hydra.launcher.max_pack='abc'"),
    (["-m", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=0"],      # was 16
     "hydra.launcher.max_pack=0"),
    (["-m", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=-1"],     # was packs of 1
     "hydra.launcher.max_pack=-1"),
    (["-m", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=2.5"],
     "hydra.launcher.max_pack=2.5"),
    (["-m", "seed=0,1", "hydra/launcher=pool", "hydra.launcher.n_jobs=abc"], "hydra.launcher.n_jobs='abc'"),
    (["-m", "seed=0,1", "hydra/launcher=pool", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0"),
    (["-m", "seed=0,1", "hydra/launcher=pool", "hydra.launcher.n_jobs=true"], "hydra.launcher.n_jobs=True"),
    # folder names a file system refuses
    ([f"sweep_id={LONG}"], "sweep_id='aaaa"),
    (["-m", "seed=0,1", f"sweep_id={LONG}"], "is 300 characters"),
    (["-m", "seed=0,1", f"hydra.sweep.dir=out/{LONG}"], "hydra.sweep.dir=out/aaaa"),
    ([f"hydra.run.dir=out/{LONG}"], "a folder name of 300 bytes"),
    ([f"hydra.run.dir={'/'.join(['b' * 200] * 21)}"], "leaves no room for its files"),
    # a mixture's ops
    (["task=mixture", "ops=[x+y,x+24y]", "p=23"], "ops[1]='x+24y': the same op as ops[0]='x+y' mod p=23"),
    (["task=mixture", "ops=[x*y,x+y,x23+y]", "p=23"], "ops[2]='x23+y': the same op as ops[1]='x+y'"),
    (["task=mixture", "op=x+y"], "op='x+y': task=mixture trains the ops of ops="),
    (["task=mixture", "op=x*y", "ops=[x+y,x-y]"], "op='x*y'"),
    # sweep_id (class 2): one folder under outputs/sweeps/, never a path out of it
    (["sweep_id=../../x"], "sweep_id='../../x': holds a path separator"),
    (["-m", "seed=0,1", "sweep_id=../../x"], "sweep_id='../../x'"),
    (["sweep_id=a/b"], "sweep_id='a/b'"),
    (["sweep_id=a\\\\b"], "holds a path separator"),
    (["sweep_id=.."], "sweep_id='..': names no folder"),
    (["sweep_id=''"], "sweep_id='': is empty"),
    (["sweep_id=' '"], "is empty"),
]


@pytest.mark.parametrize("args,named", REFUSED, ids=[" ".join(a)[:60] for a, _ in REFUSED])
def test_refused_up_front_in_one_line(args, named):
    from launch import check

    error, _ = check([*args, "p=23"] if not any(a.startswith("p=") for a in args) else list(args))
    assert error is not None and named in error and "\n" not in error, (args, error)
    assert len(error) < 400


@pytest.mark.parametrize("args", [
    ["sweep_id=my-sweep_2.1"], ["-m", "seed=0,1", "sweep_id=2026-12-07_11-50-54-102809"],
    ["-m", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=1"],
    ["-m", "seed=0,1", "hydra/launcher=pool", "hydra.launcher.n_jobs=-1"],
    ["init.freeze=[all_but_unembed]"], ["task=mixture", "ops=[x+y,x+23y]"],
    [f"hydra.run.dir=out/{'a' * 200}"],
], ids=" ".join)
def test_good_values_still_pass(args):
    """Passed before: a guard that the checks refuse only what fails."""
    from launch import check

    error, n = check([*args, "p=29"])
    assert error is None and n >= 1, error


def non_tensor_checkpoint(path: Path, weight) -> Path:
    """A finished run's checkpoint whose W_E is no tensor (a foreign or hand-made file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"W_E": weight}, "done": True, "step": 20, "fingerprint": {}}, path)
    return path


@pytest.mark.parametrize("weight", [[[0.0, 1.0]], "abc", {"a": torch.zeros(2)}, 3],
                         ids=["list", "str", "dict", "int"])
def test_an_init_checkpoint_with_a_non_tensor_weight_is_one_line(tmp_path, weight):
    from launch import check

    source = non_tensor_checkpoint(tmp_path / "src" / "checkpoint.pt", weight)
    error, _ = check(["init=pretrained_embed", f"init.from={source.parent}", "p=23"])
    assert error is not None and "\n" not in error, error
    assert error.startswith(f"init.from={source.parent}: W_E there is a ") and "not a tensor" in error


# -- through the command line: one line, exit 2, nothing written ------------------------------------

@pytest.mark.parametrize("args", [
    ["-m", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.max_pack=abc"],
    ["-m", "seed=0,1", "hydra/launcher=pool", "hydra.launcher.n_jobs=abc"],
    ["-m", "seed=0,1", f"sweep_id={LONG}"],
    [f"hydra.run.dir={LONG}"],
    ["init.freeze=[all]"],
    ["task=mixture", "ops=[x+y,x+24y]"],
], ids=lambda a: " ".join(a)[:50])
def test_a_real_launch_writes_nothing(tmp_path, args):
    """These passed --dry-run and failed after writing (a traceback; `File name too long`)."""
    r = launch([*args, *SMALL], cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_id_out_of_outputs_writes_nothing_anywhere(tmp_path):
    """`sweep_id=../../x` made outputs/sweeps/../../x: a folder outside outputs/sweeps/."""
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    for args in (["-m", "seed=0,1"], []):
        r = launch([*args, "sweep_id=../../x", *SMALL], cwd=cwd, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
        assert lines[0].startswith("error: sweep_id='../../x': holds a path separator")
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b"]



def test_a_job_in_use_by_another_launch_of_the_sweep_is_one_line(tmp_path):
    """Two launches of one sweep at once: Hydra's traceback of FolderInUse, for the one that
    found a job in use; now one line naming the folder and its holder, the other jobs run, and
    the sweep report says which job is still running elsewhere."""
    from grok.record.identity import job_dirname

    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", *SMALL, f"hydra.sweep.dir={sweep}"]
    busy = sweep / job_dirname(["seed=0", *SMALL])
    with in_use(busy):
        r = launch(args, cwd=tmp_path, timeout=120)
    assert "Traceback" not in r.stderr and "Error executing job" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {busy} is in use by pid {os.getpid()} on test: another launch is "
                      f"running this run; wait for it to end or use another folder"], r.stderr[-3000:]
    assert r.returncode == 1
    assert f"running     {busy.name}: in use by pid {os.getpid()}" in r.stderr
    assert (sweep / job_dirname(["seed=1", *SMALL]) / "summary.json").is_file()
    assert sorted(p.name for p in busy.iterdir()) == [".lock"]
