"""Every experiment preset runs: each conf/experiment/ preset once as a single run with debug=fast
(conf/debug/fast.yaml), launched as a user would. The presets are read from the folder, so a new
one is covered by being there. furuta_transfer runs with one of its starts, from the run of
furuta_sources that its init config names (sources before transfer)."""

import json
from pathlib import Path

import pytest
from conftest import CONF, compose_cfg, launch

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
FAST = ["debug=fast", "train.threads=1"]  # one thread: much faster on shared cores
# A preset that starts from another's run: the start it runs with (one of its sweep's inits).
STARTS = {"furuta_transfer": "init=furuta_add_transformer"}


def run(args: list[str], cwd: Path, run_dir: Path) -> dict:
    r = launch([*args, *FAST, f"hydra.run.dir='{run_dir}'"], cwd=cwd, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.fixture(scope="module")
def sources(workdir):
    """{checkpoint: summary} of the source runs the starts of STARTS name (init.from, relative
    to the launch folder), each trained with debug=fast by the overrides its folder is named
    by, e.g. experiment=furuta_sources,op=x+y,seed=0."""
    made = {}
    for preset, start in STARTS.items():
        source = compose_cfg([f"experiment={preset}", start, *FAST]).init["from"]
        made[str((workdir / source / "checkpoint.pt").resolve())] = \
            run(Path(source).name.split(","), workdir, workdir / source)
    return made


def test_debug_fast_wins_over_a_preset_and_the_command_line_over_it():
    cfg = compose_cfg(["experiment=nanda", "debug=fast"])
    assert (cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every) == (20, 10, 10)
    assert cfg.train.early_stop_after is None and cfg.logger.name == "none"
    assert cfg.measures.every == cfg.measures.full_every == 0
    assert (cfg.model.d_model, cfg.model.d_mlp) == (32, 64)
    assert (cfg.p, cfg.task.name, cfg.model.name) == (113, "add", "nanda")  # the preset's own
    cfg = compose_cfg(["experiment=nanda", "debug=fast", "train.steps=50", "logger=wandb"])
    assert cfg.train.steps == 50 and cfg.logger.name == "wandb"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_runs_with_debug_fast(preset, workdir, request):
    args = [f"experiment={preset}"]
    if preset in STARTS:
        sources = request.getfixturevalue("sources")
        args.append(STARTS[preset])
    s = run(args, workdir, workdir / "runs" / preset)
    assert (s["status"], s["steps"]) == ("complete", 20)
    if preset in STARTS:  # it started from its source's weights
        assert s["init_from"] in sources
        assert s["init_source_verdict"] == sources[s["init_from"]]["verdict"]
