"""The command line's own flags, as a user types them: help and info print and exit 0, the
console script finds its configs however it is installed, a run says where its folder is."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, TINY, build_wheel, launch

AS_CONSOLE_SCRIPT = "import sys; from {} import cli; sys.argv[0] = 'grok-launch'; sys.exit(cli())"


def console_script(args, cwd, path=ROOT, timeout=120, module="launch"):
    """Run `cli` as the grok-launch script pip writes does: launch imported as a module (not
    __main__), from another working directory. `module`: launch in the checkout, grok_launch.launch
    where an install puts it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(path)}
    return subprocess.run([sys.executable, "-c", AS_CONSOLE_SCRIPT.format(module), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,says", [
    (["--hydra-help"], "== Flags =="),
    (["--info"], "Installed Hydra Plugins"),
    (["--info", "config"], "sweep_id"),
    (["--info", "searchpath"], "conf"),
    (["-sc", "install=bash"], "complete"),
    (["--help"], "--dry-run"),
])
def test_help_and_info_flags_print_and_exit_0(tmp_path, args, says):
    r = launch(args, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert says in r.stdout
    assert "Traceback" not in r.stderr and "error" not in r.stderr.lower()
    assert list(tmp_path.iterdir()) == []  # nothing run, nothing written


def test_help_documents_the_project_flags(tmp_path):
    out = launch(["--help"], cwd=tmp_path, timeout=120).stdout
    for flag in ("--dry-run", "--shell-completion install=bash", "-sc install=bash", "--cfg job",
                 "-m, --multirun"):
        assert flag in out, flag
    readme = (ROOT / "README.md").read_text()
    assert "--dry-run" in readme and "--shell-completion" in readme


def test_console_script_finds_its_configs_from_any_directory(tmp_path):
    r = console_script(["--dry-run", "-m", "frac=0.3,0.5"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 job(s), every config valid" in r.stdout
    r = console_script(["--cfg", "job", "p=23"], cwd=tmp_path)
    assert r.returncode == 0 and "p: 23" in r.stdout, r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_installed_grok_launch(tmp_path):
    """The grok-launch on PATH, where `pip install -e .` of this checkout put it (CI)."""
    exe = shutil.which("grok-launch")
    spec = subprocess.run([sys.executable, "-c", "import grok_launch.launch as m; print(m.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, env={
                              k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if exe is None or Path(spec.stdout.strip()).resolve() != ROOT / "launch.py":
        pytest.skip("grok-launch is not installed from this checkout (pip install -e .)")
    r = subprocess.run([exe, "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "1 job(s)" in r.stdout, r.stderr[-2000:]


@pytest.mark.slow
def test_a_regular_install_packages_the_configs(tmp_path):
    """A wheel (what `pip install .` installs) holds conf/ as grok/conf and every subpackage;
    launched from the unpacked wheel, far from the checkout, it finds its configs."""
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "grok/conf/config.yaml").is_file() and (site / "grok/models/hooked.py").is_file()
    assert not (site / "conf").exists()
    assert (site / "grok_launch/launch.py").is_file() and (site / "grok_analysis/__main__.py").is_file()
    assert not (site / "launch.py").exists() and not (site / "analysis").exists()
    run_in = tmp_path / "elsewhere"
    run_in.mkdir()
    r = console_script(["--dry-run", "experiment=nanda"], cwd=run_in, path=site, module="grok_launch.launch")
    assert r.returncode == 0 and "1 job(s)" in r.stdout, r.stderr[-2000:]


def test_a_run_prints_its_folder(tmp_path):
    r = launch([*TINY, "train.steps=10", "logger=none", "train.threads=1"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("run folder: ")]
    folder = Path(line.removeprefix("run folder: ").split(" (")[0])
    assert (tmp_path / folder / "summary.json").is_file()
    assert "did not generalise" in line
