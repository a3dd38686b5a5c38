"""The import contract (pyproject.toml [tool.import-layers], scripts/check_layers.py): kept by
the project, and broken, with the import named, by an upward import, a forbidden import, a
circle or a module in no layer."""

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

CHECK = ROOT / "scripts" / "check_layers.py"


def check(root):
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True,
                          timeout=60)


def test_the_project_keeps_its_import_layers():
    r = check(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "import layers: kept"


@pytest.fixture
def tree(tmp_path):
    """A copy of the project's code and its contract, to plant imports in."""
    for d in ("grok", "analysis", "hydra_plugins"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("launch.py", "pyproject.toml"):
        shutil.copy(ROOT / f, tmp_path / f)
    assert check(tmp_path).returncode == 0
    return tmp_path


def plant(path, line):
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")


@pytest.mark.parametrize("module, line, named", [
    ("grok/data.py", "from grok.train import run", "grok.data imports grok.train (line"),
    ("grok/record/files.py", "from grok.runs import Run", "grok.record.files imports grok.runs (line"),
    ("grok/tasks/base.py", "import grok.checks", "grok.tasks.base imports grok.checks (line"),
])
def test_an_upward_import_breaks_the_contract(tree, module, line, named):
    plant(tree / module, line)
    r = check(tree)
    assert r.returncode == 1
    assert named in r.stdout and "which is above it" in r.stdout


def test_grok_never_imports_analysis(tree):
    plant(tree / "grok" / "runs.py", "from analysis.plots import heatmap")
    r = check(tree)
    assert r.returncode == 1
    assert "grok.runs imports analysis.plots (line" in r.stdout and "grok never imports analysis" in r.stdout


@pytest.mark.parametrize("line, named", [
    ("from grok_analysis.plots import heatmap", "grok never imports analysis"),
    ("import grok_analysis", "grok never imports analysis"),
    ("from grok_launch.launch import cli", "which is above it"),
])
def test_an_import_by_the_installed_name_counts_as_the_checkouts(tree, line, named):
    """A regular install names analysis/ grok_analysis and launch.py grok_launch.launch."""
    plant(tree / "grok" / "runs.py", line)
    r = check(tree)
    assert r.returncode == 1 and named in r.stdout, r.stdout


def test_a_circle_breaks_the_contract(tree):
    plant(tree / "grok" / "config.py", "from grok.data import make_data")  # data -> sampling -> config
    r = check(tree)
    assert r.returncode == 1
    assert "circle of imports:" in r.stdout and "grok.config" in r.stdout and "grok.data" in r.stdout


def test_every_module_is_placed(tree):
    (tree / "grok" / "newthing.py").write_text("X = 1\n")
    r = check(tree)
    assert r.returncode == 1
    assert "grok.newthing: in no layer" in r.stdout
