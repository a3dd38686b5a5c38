"""Installed like a library: a regular (non-editable) install of a wheel into a fresh venv puts
the checkout's launch.py and analysis/ under the project's own names (grok_launch.launch,
grok_analysis), no top-level `launch` or `analysis`, and both console scripts run from any
directory. The venv borrows this interpreter's installed dependencies through a .pth line (no
download); a path a .pth names has its own .pth files left unread, so this checkout's editable
install (a .pth finder) is not seen there: the test checks that grok comes from the venv."""

import os
import site
import subprocess
import sys
import venv

import pytest
from conftest import build_wheel

pytestmark = pytest.mark.slow


def _run(args, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, its python, its site-packages) with the wheel of this checkout installed."""
    tmp = tmp_path_factory.mktemp("install")
    wheel = build_wheel(tmp)
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp).stdout.strip()
    deps = [*site.getsitepackages(), site.getusersitepackages()]
    (tmp / "venv" / purelib).joinpath("borrowed_deps.pth").write_text(
        "".join(f"{d}\n" for d in deps if os.path.isdir(d)))
    r = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
              "-q", str(wheel)], cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return env, py, tmp / "venv" / purelib


def test_the_install_has_no_top_level_launch_or_analysis(installed, tmp_path):
    env, py, purelib = installed
    names = {p.name for p in purelib.iterdir()}
    assert {"grok", "grok_analysis", "grok_launch", "hydra_plugins"} <= names
    assert not names & {"launch.py", "launch", "analysis", "analysis.py"}
    r = _run([str(py), "-c", "import grok, grok_analysis, grok_launch.launch as l; "
                             "print(grok.__file__, grok_analysis.__file__, l.__file__, sep='\\n')"],
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(line.startswith(str(env)) for line in r.stdout.split()), r.stdout  # the wheel's
    for name in ("launch", "analysis"):
        r = _run([str(py), "-c", f"import {name}"], cwd=tmp_path)
        assert r.returncode == 1 and f"No module named '{name}'" in r.stderr


@pytest.mark.parametrize("script, says", [("grok-launch", "--dry-run"),
                                          ("grok-analysis", "usage: grok-analysis")])
def test_both_console_scripts_run_from_any_directory(installed, tmp_path, script, says):
    env, _, _ = installed
    r = _run([str(env / "bin" / script), "--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert says in r.stdout and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_installed_launcher_finds_its_packaged_configs(installed, tmp_path):
    env, _, _ = installed
    r = _run([str(env / "bin" / "grok-launch"), "--dry-run", "-m", "frac=0.3,0.5"], cwd=tmp_path)
    assert r.returncode == 0 and "2 job(s), every config valid" in r.stdout, r.stderr[-2000:]
