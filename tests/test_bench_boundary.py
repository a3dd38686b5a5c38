"""bench/boundary.py --quick end to end: both sweeps run, the totals print and parse, and the
search never trains more runs than the grid."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_quick_bench_prints_totals_and_the_search_runs_at_most_the_grid(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "boundary.py"), "--quick",
                        "--out", str(tmp_path / "b")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    runs = re.search(r"^runs: grid (\d+), search (\d+) \(", out, re.M)
    steps = re.search(r"^run-steps: grid (\d+), search (\d+) \(([\d.]+)% of the grid\)", out, re.M)
    same = re.search(r"^intervals: (\d+) of (\d+) ops the same", out, re.M)
    assert runs and steps and same, out
    grid_runs, search_runs = map(int, runs.groups())
    assert grid_runs == 2 * 9 and 0 < search_runs <= grid_runs
    grid_steps, search_steps = int(steps[1]), int(steps[2])
    assert 0 < search_steps <= grid_steps
    assert int(same[2]) == 2
    assert re.search(r"^target: .*: (met|not met) ", out, re.M)
    assert re.search(r"^wall time .*: grid \d+ s, search \d+ s", out, re.M)
