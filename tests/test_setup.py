"""The set-up a new user gets: the lock agrees with pyproject.toml, and the suite compares numbers."""

import importlib.util

import pytest
import torch
from conftest import ROOT

spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_lock)

PYPROJECT = """
[project]
dependencies = ["numpy>=1.26", "pandas>=2.2,<4", "tomli>=2; python_version < '3.11'"]
[project.optional-dependencies]
test = ["pytest>=8"]
"""
LOCK = "numpy==2.4.6\n    # via pandas\npandas==3.1.1\npytest==9.2.0\n"


def test_the_repository_lock_agrees_with_pyproject():
    req = ROOT / "requirements"
    assert check_lock.disagreements((ROOT / "pyproject.toml").read_text(),
                                    (req / "lock.txt").read_text(),
                                    (req / "constraints.in").read_text()) == []


def test_the_lock_pins_the_cpu_torch_build():
    pins, _ = check_lock.read_lock((ROOT / "requirements" / "lock.txt").read_text())
    assert str(pins["torch"]).startswith("2.13.0")


def test_a_lock_that_agrees_passes_and_markers_for_other_pythons_are_skipped():
    assert check_lock.disagreements(PYPROJECT, LOCK) == []


@pytest.mark.parametrize("lock, says", [
    (LOCK.replace("pytest==9.2.0\n", ""), "pytest (pytest>=8) is in pyproject.toml but not in the lock"),
    (LOCK.replace("pandas==3.1.1", "pandas==4.0.0"), "pandas==4.0.0 is outside pyproject.toml's pandas"),
    (LOCK.replace("numpy==2.4.6", "numpy==1.20"), "numpy==1.20 is outside"),
    (LOCK.replace("pandas==3.1.1", "pandas>=3"), "'pandas>=3' is not an exact pin"),
    (LOCK + "NumPy==2.4.6\n", "NumPy is pinned twice"),
])
def test_a_lock_that_disagrees_names_the_package(lock, says):
    problems = check_lock.disagreements(PYPROJECT, lock)
    assert any(says in p for p in problems), problems


def test_a_constraint_the_lock_breaks_is_named():
    problems = check_lock.disagreements(PYPROJECT, LOCK + "torch==2.15.0\n", "torch==2.13.0\n")
    assert problems == ["lock: torch==2.15.0 is outside constraints.in's torch==2.13.0"]


@pytest.mark.parametrize("compare", [
    lambda: torch.tensor(2.0) == pytest.approx(2.0),
    lambda: 2.0 == pytest.approx(torch.tensor(2.0)),
    lambda: [1.0, 2.0] == pytest.approx([1.0, torch.tensor(2.0)]),
    lambda: {"a": torch.tensor(1.0)} == pytest.approx({"a": 1.0}),
])
def test_approx_refuses_tensors_in_every_pytest(compare):
    with pytest.raises(TypeError, match="compare numbers"):
        compare()


def test_approx_still_compares_numbers():
    assert 0.1 + 0.2 == pytest.approx(0.3)
    assert [1.0, 2.0 + 1e-9] == pytest.approx([1.0, 2.0])
    assert 2.0 != pytest.approx(2.1)
