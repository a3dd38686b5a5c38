"""Shared helpers: compose real configs, run launch.py as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A run small enough for a unit test (about 1 ms a step), still a real model and optimizer.
TINY = ["p=23", "model.d_model=32", "model.d_head=8", "model.d_mlp=64",
        "train.steps=60", "train.eval_every=10", "train.checkpoint_every=20",
        "train.early_stop_after=null"]


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))   # W&B's own cache and settings stay in tmp
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb-config"))


def compose_cfg(overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def launch(args, cwd, timeout=300, **kw):
    """Run launch.py as a user would, in `cwd` so any outputs/ folder lands there."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
