"""Shared helpers: compose real configs, run launch.py as a user would."""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# `launch` and `analysis` are the checkout's names (an install's are grok_launch.launch and
# grok_analysis): the tests import them from here (pyproject.toml's pytest `pythonpath`), and so
# do their subprocesses (`python -m analysis`, `-c "import launch"`), from any working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

# A run small enough for a unit test (about 1 ms a step), still a real model and optimizer.
TINY = ["p=23", "model.d_model=32", "model.d_head=8", "model.d_mlp=64",
        "train.steps=60", "train.eval_every=10", "train.checkpoint_every=20",
        "train.early_stop_after=null"]


def _tensor_in(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, dict):
        return any(map(_tensor_in, x.values()))
    return isinstance(x, (list, tuple)) and any(map(_tensor_in, x))


def _approx_numbers(expected, *args, **kwargs):
    """pytest.approx compares numbers: a tensor on either side works in one pytest and raises in the
    next (pytest 9.2: `iteration over a 0-d tensor`), so here it fails in every version, saying why."""
    if _tensor_in(expected):
        raise TypeError(f"pytest.approx({expected!r}): compare numbers (.item(), .tolist()), not tensors")
    approx = _APPROX(expected, *args, **kwargs)

    class Numbers(type(approx)):
        def __eq__(self, actual):
            if _tensor_in(actual):
                raise TypeError(f"{actual!r} == pytest.approx(...): compare numbers, not tensors")
            return super().__eq__(actual)

        __hash__ = None

    approx.__class__ = Numbers
    return approx


_APPROX, pytest.approx = pytest.approx, _approx_numbers


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))   # W&B's own cache and settings stay in tmp
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb-config"))


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one thread is as fast and not slowed ~100x when other jobs share the cores.
    Modules that want it: `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def compose_cfg(overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def launch(args, cwd, timeout=300, **kw):
    """Run launch.py as a user would, in `cwd` so any outputs/ folder lands there."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)["model"]


def assert_same_run(reference, run_dir):
    """Summaries (but for timing), every metric and every weight equal, bit for bit."""
    volatile = {"wall_time_s", "steps_per_s", "resumed_from", "sweep_id"}
    a = json.loads((Path(reference) / "summary.json").read_text())
    b = json.loads((Path(run_dir) / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k not in volatile} == \
        {k: v for k, v in b.items() if k not in volatile}
    assert read_metrics(reference) == read_metrics(run_dir)
    wa, wb = weights(reference), weights(run_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_logged(history_row: dict, row: dict) -> None:
    """A local metrics row is what W&B logged at that step: the same keys (W&B's under their
    sections, read back by grok.wandb_view.record_name) and numbers, and each non-empty list
    (per-neuron, per-frequency) as a W&B histogram (grok.wandb_view)."""
    from grok.wandb_view import record_name

    history_row = {record_name(k): v for k, v in history_row.items()}
    keys = {k.split("/_type")[0] for k in history_row if not k.endswith(("/values", "/bins"))}
    assert keys - {"_step"} == set(row)  # absent measures absent in both
    for key, value in row.items():
        if isinstance(value, list) and value:
            assert history_row[f"{key}/_type"] == "histogram", key
        else:
            assert history_row[key] == value, key


def wandb_files(run_dir) -> list:
    """The transaction logs of the W&B run of `run_dir` (its checkpoint's id), wherever it keeps
    them (grok.tracking.run_files: a sweep's job in <sweep>/wandb)."""
    from grok.tracking import run_files

    return run_files(run_dir, torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)["wandb_id"])


@contextlib.contextmanager
def in_use(folder):
    """Hold the folder's lock as another launch working there does (flock on `.lock`)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"pid {os.getpid()} on test\n")
        f.flush()
        yield


def build_wheel(tmp: Path) -> Path:
    """The wheel a regular `pip install .` of this checkout installs, built from a copy of its
    sources (no build folder or egg-info left in the checkout), in `tmp`/dist."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "launch.py", "grok", "analysis", "hydra_plugins", "conf"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("grok-*.whl")
    return wheel
