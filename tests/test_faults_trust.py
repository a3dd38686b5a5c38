"""A run folder is data, never code or a path (issue 20, classes 1 and 2).

1. Code from a record: a dotted name a config gives (`task._target_`, `model._target_`,
   `optimizer._target_`, `loss.fn._target_`) resolves only to the project's own registered
   classes and functions (grok.targets), looked up before anything is imported, so a crafted
   `config.yaml` naming a module of its own never runs it.
2. Writes outside the output folder: every file that analysis writes takes its name from a
   cleaned slug (grok.record.files.slug) under the folder it was asked to write to, so summary
   values with `../` in them never name a path.

The crafted module `evilmod` writes a marker file when imported: no entry point may write it.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY, compose_cfg, launch
from omegaconf import OmegaConf

from grok.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; the cores may be shared

BASIC = Path(__file__).resolve().parent / "fixtures" / "records" / "basic"
FOREIGN = {"task._target_": "evilmod.Evil", "model._target_": "evilmod.build",
           "optimizer._target_": "evilmod.Rule", "loss.fn._target_": "evilmod.loss"}


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module `evilmod` importable from sys.path (and PYTHONPATH for subprocesses) whose import
    writes a marker file; the marker's path."""
    lib = tmp_path / "lib"
    lib.mkdir()
    marker = tmp_path / "IMPORTED"
    (lib / "evilmod.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('evilmod imported')\n"
        "class Evil:\n    def __init__(self, *a, **k):\n        pass\n"
        "class Rule:\n    pass\n"
        "def build(*a, **k):\n    return None\n"
        "def loss(*a, **k):\n    return None\n")
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(lib), os.environ.get("PYTHONPATH")])))
    sys.modules.pop("evilmod", None)
    yield marker
    sys.modules.pop("evilmod", None)


def fixture_run(dest: Path, seed: int = 0) -> Path:
    """A copy of a stored finished run (tests/fixtures/records/basic) at `dest`."""
    src = next(p for p in sorted(BASIC.iterdir()) if f"seed={seed}," in p.name)
    shutil.copytree(src, dest)
    return dest


def edit_config(run_dir: Path, **values) -> None:
    """Set dotted keys of the run's config.yaml (as an edited file on disk would hold them)."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))


def edit_summary(run_dir: Path, **values) -> None:
    s = json.loads((run_dir / "summary.json").read_text())
    s.update(values)
    (run_dir / "summary.json").write_text(json.dumps(s, indent=2))


def tree(root: Path) -> dict:
    """Every file under `root`, by path, with its bytes: what a call may not change."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def changes(before: dict, after: dict) -> set:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


# -- 1. a name from a record is looked up, never imported --------------------------------------

def test_load_run_task_never_imports_the_module_its_config_names(tmp_path, evil):
    from grok import load_run

    d = fixture_run(tmp_path / "run")
    edit_config(d, **{"task._target_": "evilmod.Evil"})
    with pytest.raises(ConfigError, match=r"^task._target_='evilmod.Evil': not a task class"):
        load_run(d).task()
    assert not evil.exists(), "load_run(d).task() imported the module config.yaml named"
    assert "evilmod" not in sys.modules


def test_load_run_model_never_imports_the_module_its_config_names(tmp_path, evil):
    from grok import load_run

    d = fixture_run(tmp_path / "run")
    edit_config(d, **{"task._target_": "evilmod.Evil"})
    record = load_run(d)
    with pytest.raises(ConfigError, match="evilmod.Evil"):
        record.model()
    assert not evil.exists(), "load_run(d).model() imported the module config.yaml named"
    assert len(record.weights()) > 0  # the weights are data: still read


def test_the_transformer_lens_export_never_imports_the_module_a_config_names(tmp_path, evil):
    pytest.importorskip("transformer_lens")
    from grok.export import to_hooked_transformer

    d = fixture_run(tmp_path / "run")
    edit_config(d, **{"task._target_": "evilmod.Evil"})
    with pytest.raises(ConfigError, match="evilmod.Evil"):
        to_hooked_transformer(d)
    assert not evil.exists(), "to_hooked_transformer imported the module config.yaml named"


def test_a_model_target_resolves_only_to_a_model_builder_of_the_project(tmp_path, evil):
    """A dotted path that walks from grok.models into another library's function (torch.save,
    reached through a module grok.models imports) is no model builder: refused by name."""
    from grok import load_run
    from grok.models import builder

    for target in ("grok.models.hooked.torch.save", "grok.models.mlp.torch.load", "evilmod.build",
                   "grok.models.HookedTransformer"):
        cfg = compose_cfg(["model=mlp", f"model._target_={target}"])
        with pytest.raises(ConfigError, match=rf"^model._target_='{target}': not a model builder"):
            builder(cfg)
    d = fixture_run(tmp_path / "run")
    edit_config(d, **{"model._target_": "grok.models.hooked.torch.save"})
    with pytest.raises(ConfigError, match="grok.models.hooked.torch.save"):
        load_run(d).model()
    assert not evil.exists()


def test_an_optimizer_target_is_looked_up_never_imported(evil):
    from grok.optim import update_rule

    with pytest.raises(ConfigError, match=r"^optimizer._target_='evilmod.Rule': not an update rule"):
        update_rule({"_target_": "evilmod.Rule", "name": "adamw"})
    assert not evil.exists() and "evilmod" not in sys.modules


def test_a_loss_fn_target_is_looked_up_never_imported(evil):
    """`loss.fn._target_` names a token loss of grok.losses; anything else is refused by the
    up-front check and by the trainer, without importing it."""
    from grok.checks import check_run
    from grok.train import make_loss

    cfg = compose_cfg(["loss=stablemax", "loss.fn._target_=evilmod.loss", *TINY])
    with pytest.raises(ConfigError, match=r"^loss.fn._target_='evilmod.loss': not a token loss"):
        check_run(cfg)
    with pytest.raises(ConfigError, match="evilmod.loss"):
        make_loss(cfg)
    assert not evil.exists(), "a loss.fn._target_ was imported"
    cfg = compose_cfg(["loss=stablemax", "loss.fn._target_=os.system", *TINY])
    with pytest.raises(ConfigError, match="os.system"):
        make_loss(cfg)
    cfg = compose_cfg(["loss=stablemax", *TINY])
    OmegaConf.update(cfg, "loss.fn._args_", ["rm -rf"], force_add=True)  # Hydra's keys: not read
    with pytest.raises(ConfigError, match=r"^loss.fn._args_: not a key of a token loss"):
        check_run(cfg)
    import grok.losses

    assert make_loss(compose_cfg(["loss=stablemax"])) is grok.losses.stablemax_ce
    assert make_loss(compose_cfg(["loss=cross_entropy"])) is grok.losses.cross_entropy


def test_a_foreign_loss_target_on_the_command_line_is_one_line_exit_2(tmp_path, evil):
    r = launch(["--dry-run", "loss=stablemax", "loss.fn._target_=evilmod.loss", *TINY],
               cwd=tmp_path, timeout=120)
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and "loss.fn._target_='evilmod.loss'" in lines[0], r.stderr[-2000:]
    assert not evil.exists()


def test_every_project_target_in_conf_is_registered_and_nothing_else_resolves():
    """Each `_target_` the configs in conf/ give (task, model, optimizer, loss) is in its kind's
    registry; the registries hold the project's classes and functions only."""
    from grok.targets import REGISTRY, resolve

    conf = Path(__file__).resolve().parents[1] / "conf"
    kinds = {"task": "task._target_", "model": "model._target_", "optimizer": "optimizer._target_",
             "loss": "loss.fn._target_"}
    seen = set()
    for kind in kinds:
        for f in sorted((conf / kind).glob("*.yaml")):
            doc = yaml.safe_load(f.read_text()) or {}
            node = doc.get("task", doc) if kind == "task" else doc  # task=mixture: @package _global_
            node = node.get("fn", {}) if kind == "loss" else node
            if isinstance(node, dict) and "_target_" in node:
                assert resolve(kind, node["_target_"], kinds[kind]) is not None, f
                seen.add(kind)
    assert seen == set(kinds)
    for kind, names in REGISTRY.items():
        assert names, kind
        for name, obj in names.items():
            assert name == f"{obj.__module__}.{obj.__qualname__}"
    # a project object of another kind is no target of this one
    with pytest.raises(ConfigError, match="not a task class"):
        resolve("task", "grok.optim.AdamW", "task._target_")


def test_an_init_source_whose_config_names_foreign_targets_is_read_as_data(tmp_path, evil):
    """init.from reads the source's checkpoint (tensors only); the names in its config.yaml are
    never resolved, so a crafted source runs nothing and the run trains from its weights."""
    from grok.train import run

    src = fixture_run(tmp_path / "source")
    edit_config(src, **FOREIGN)
    cfg = compose_cfg(["logger=none", "p=23", "model.d_model=16", "model.d_head=8", "model.d_mlp=32",
                       "train.steps=10", "train.eval_every=10", "measures=off",
                       "init=pretrained_embed", f"init.from={src}"])
    s = run(cfg, tmp_path / "run")
    assert s["status"] == "complete" and s["init_module"] == "embedding"
    assert not evil.exists()


# -- 2. output file names from records are slugs under the folder asked for --------------------

def mixture_run(dest: Path, model: str, p=23) -> Path:
    d = fixture_run(dest)
    edit_summary(d, task="mixture", model=model, p=p, mixture="{x+y, x*y}", op=None,
                 per_op={"x+y": {"verdict": "grokked", "best_test_acc": 1.0},
                         "x*y": {"verdict": "did not generalise", "best_test_acc": 0.4}})
    return d


def test_mixtures_never_writes_outside_its_folder_whatever_the_model_name(tmp_path, capsys):
    """The issue's case: a summary's `model` of `/../../../victim/README` made
    `python -m analysis mixtures` write over a file outside the sweep (once the sweep's own
    analysis folder holds the directory the name climbs from)."""
    from analysis.__main__ import main

    world = tmp_path / "world"
    sweep = world / "sweep"
    mixture_run(sweep / "run", model="/../../../victim/README")
    (sweep / "analysis" / "mixtures_p23_model").mkdir(parents=True)
    victim = world / "victim" / "README.csv"
    victim.parent.mkdir(parents=True)
    victim.write_text("precious\n")
    before = tree(world)
    main(["mixtures", str(sweep)])
    assert victim.read_text() == "precious\n"
    changed = changes(before, tree(world))
    assert changed and all(k.startswith("sweep/analysis/") for k in changed), changed
    assert all(Path(k).parent == Path("sweep/analysis") for k in changed), changed


@pytest.mark.parametrize("field,value,climbs_from", [
    ("p", "23/../../../victim/README", "transfer_p23"),
    ("model", "/../../../victim/README", "transfer_p23_model"),
    ("frac", "/../../../victim/README", "transfer_p23_modelnanda_frac")])
def test_transfer_never_writes_outside_its_folder_whatever_the_summary_says(tmp_path, field, value,
                                                                           climbs_from):
    """p, model and frac of a summary name transfer's tables: `../` in any of them (with the
    folder the name climbs from made inside the sweep's analysis folder) stays a name."""
    from analysis.__main__ import main

    world = tmp_path / "world"
    sweep = world / "sweep"
    scratch = fixture_run(sweep / "scratch")
    moved = fixture_run(sweep / "moved", seed=1)
    edit_summary(moved, init_module="embedding", init_source_op="x*y")
    for d in (scratch, moved):
        edit_summary(d, **{field: value})
    (sweep / "analysis" / climbs_from).mkdir(parents=True)
    (world / "victim").mkdir()
    before = tree(world)
    main(["transfer", str(sweep)])
    changed = changes(before, tree(world))
    assert changed and all(Path(k).parent == Path("sweep/analysis") for k in changed), changed


def test_plots_name_a_run_by_a_slug_whatever_its_task_is_called(tmp_path, capsys):
    """A crafted task name with `../` and `/` in it names no path: the plot lands in --out."""
    from analysis.__main__ import main

    world = tmp_path / "world"
    d = fixture_run(world / "sweep" / "run")
    edit_summary(d, task="../../../victim/x", op=None, p=None, frac=None)
    edit_config(d, op=None)
    before = tree(world)
    main(["plots", str(world / "sweep"), "--out", str(world / "out")])
    changed = changes(before, tree(world))
    assert len(changed) == 1 and Path(next(iter(changed))).parent == Path("out"), changed


def test_slug_makes_one_plain_file_name_part_of_any_text():
    from grok.record.files import file_in, slug

    for text in ("..", ".", "../../x", "/etc/passwd", "a/b", "x" * 200, ".hidden", "\x00", "", "a\\b",
                 "model/../../../../elsewhere/README", "…é", "~", "-rf"):
        s = slug(text)
        assert s and "/" not in s and "\\" not in s and s not in (".", "..") and not s.startswith("."), s
        assert len(s) <= 60 + 7 and s == slug(text)
        assert (Path("out") / s).parent == Path("out")
    assert slug("x+y") == "x+y" and slug("frac=0.5") == "frac=0.5"  # a plain name stays readable
    assert slug("a/b") != slug("a_b") and slug("..") != slug("_")  # changed: a hash keeps them apart
    assert file_in("out", "grid.csv") == Path("out/grid.csv")
    for bad in ("../x.csv", "a/b.csv", "..", ".", "", "/abs.csv"):
        with pytest.raises(ValueError):
            file_in("out", bad)


def test_a_summary_step_that_is_no_integer_names_no_weights_file(tmp_path):
    """load_run takes a finished run's last step from its summary; a step names a snapshot file,
    so a crafted `"steps": "../../x"` is no step: the run reads as unfinished, nothing opened."""
    from grok import load_run

    d = fixture_run(tmp_path / "run")
    edit_summary(d, steps="../../../victim")
    r = load_run(d)
    assert r.final_step is None and r.steps == []
    with pytest.raises(ValueError, match="not finished"):
        r.weights()


# -- every entry point that reads a folder, on one crafted sweep --------------------------------

def crafted_sweep(world: Path) -> Path:
    """A sweep folder whose runs name the foreign module in every `_target_` and carry `../`
    in their summary values (and the folders those names climb from, inside the sweep)."""
    sweep = world / "sweep"
    runs = [fixture_run(sweep / "a", 0), fixture_run(sweep / "b", 1),
            mixture_run(sweep / "m", model="/../../../victim/README")]
    edit_summary(runs[1], init_module="embedding", init_source_op="x*y")
    for d in runs:
        edit_config(d, **FOREIGN)
    for d in runs[:2]:
        edit_summary(d, model="/../../../victim/README")
    for prefix in ("mixtures_p23_model", "transfer_p23_model"):
        (sweep / "analysis" / prefix).mkdir(parents=True, exist_ok=True)
    return sweep


def crafted_boundary() -> dict:
    """A boundary sweep's boundary.json whose cells and ids are paths and mathtext."""
    row = {"status": "found", "capped": False, "interval": [0.5, 0.6], "no_end": 0.5,
           "yes_end": 0.6, "non_monotone": True, "against": [0.9], "unknown_inside": [],
           "points": [{"value": 0.5, "outcome": "no", "grokked": 0, "known": 1, "seeds": 1}],
           "runs": 2}
    return {"format": 1, "axis": {"name": "../frac", "lo": "0.1", "hi": "0.9", "resolution": "0.1",
                                  "direction": "up"},
            "seeds": [0], "k": 1, "outcome_rule": "generalised", "rounds": 1, "runs_spent": 2,
            "worst_case": 3, "reused": 0, "reused_from": {}, "sweep_id": "../../victim/README",
            "cells": [["op=../../victim/README"], ["op=$x$", "model=/etc/passwd"]],
            "rows": [{**row, "cell": ["op=../../victim/README"]},
                     {**row, "status": "nowhere", "cell": ["op=$x$"]}],
            "runs": []}


def test_every_entry_point_that_reads_a_folder_runs_nothing_and_writes_only_where_asked(
        tmp_path, evil, capsys):
    from analysis.__main__ import main
    from grok import load_run
    from grok.export import to_hooked_transformer
    from grok.train import run

    world = tmp_path / "world"
    sweep = crafted_sweep(world)
    (sweep / "boundary.json").write_text(json.dumps(crafted_boundary()))
    (world / "victim").mkdir()
    (world / "victim" / "README.csv").write_text("precious\n")
    (world / "victim" / "README.md").write_text("precious\n")
    before = tree(world)
    run_dir = sweep / "a"
    record = load_run(run_dir)
    assert len(record.weights()) > 0
    for call in (record.task, record.model, lambda: to_hooked_transformer(run_dir)):
        with pytest.raises(ConfigError, match="evilmod"):
            call()
    assert not evil.exists(), "load_run or the export imported the module config.yaml named"
    assert tree(world) == before
    out = world / "out"
    # every subcommand of `python -m analysis` that reads folders (labels reads none)
    for cmd in ("grid", "exponents", "plots", "report", "mixtures", "transfer", "phases",
                "boundary"):
        try:
            main([cmd, str(sweep), "--out", str(out / cmd)])
        except SystemExit as e:  # exponents: no x^a+y^b runs here; one line, no file
            assert cmd == "exponents" and "error:" in str(e.code), (cmd, e.code)
    for cmd in ("mixtures", "transfer"):  # their default folder: <sweep>/analysis
        main([cmd, str(sweep)])
    changed = changes(before, tree(world))
    assert changed and all(k.startswith(("out/", "sweep/analysis/")) for k in changed), changed
    assert {Path(k).parts[1] for k in changed if k.startswith("out/")} >= {
        "grid", "plots", "report", "mixtures", "transfer", "phases", "boundary"}
    # a launch into the crafted folder (another config) is refused, writing nothing; the sweep's
    # status report reads every job's record as data
    from grok.record.lock import RunRefused
    from grok.record.status import sweep_status

    before = tree(world)
    with pytest.raises(RunRefused):
        run(compose_cfg(["logger=none", *TINY]), run_dir)
    assert {Path(job).name: status for job, status, _ in sweep_status(sweep)} == \
        {"a": "complete", "b": "complete", "m": "complete"}
    assert tree(world) == before
    # a run started from the crafted folder (init.from) trains from its weights and runs nothing
    cfg = compose_cfg(["logger=none", "p=23", "model.d_model=16", "model.d_head=8", "model.d_mlp=32",
                       "train.steps=10", "train.eval_every=10", "measures=off",
                       "init=pretrained_embed", f"init.from={run_dir}"])
    before = tree(world)
    assert run(cfg, world / "new")["status"] == "complete"
    assert all(k.startswith("new/") for k in changes(before, tree(world)))
    assert not evil.exists(), "an entry point imported the module a record named"
    assert (world / "victim" / "README.csv").read_text() == "precious\n"


def test_no_source_resolves_imports_or_unpickles_a_value_but_the_registry_and_the_checkpoint_reader():
    """The one place a config's name resolves is grok.targets (a lookup), the one place weights
    are loaded is grok.record.checkpoint.read (weights_only=True); nothing evals, unpickles a
    record or loads YAML unsafely. The pool launcher's cloudpickle files are its own (written by
    the launch, in its temporary folder), not a record."""
    import re

    root = Path(__file__).resolve().parents[1]
    banned = re.compile(r"\b(get_class|get_method|_locate|import_module|__import__|instantiate|"
                        r"pickle\.loads?|yaml\.load|yaml\.unsafe_load|exec)\(|(?<![.\w])eval\(")
    found = []
    for path in sorted([*root.glob("grok/**/*.py"), *root.glob("analysis/*.py"),
                        *root.glob("hydra_plugins/**/*.py"), root / "launch.py"]):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if banned.search(code) or ("torch.load(" in code and "weights_only=True" not in code):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert found == [], "\n".join(found)
    loads = [str(p.relative_to(root)) for p in root.glob("grok/**/*.py")
             if re.search(r"torch\.load\((?!\.\.\.|weights_only)", p.read_text())]  # calls, not docstrings
    assert loads == ["grok/record/checkpoint.py"]


def test_runs_read_from_wandb_are_data_too(tmp_path, evil, monkeypatch, capsys):
    """`grid --wandb` and `exponents --wandb` read configs and summaries from W&B: the targets
    they name are never resolved, and their values name no path (the pools' labels are slugs)."""
    from types import SimpleNamespace

    import wandb

    from analysis.__main__ import main

    def run(i, lr):
        return SimpleNamespace(id=f"r{i}", summary={
            "status": "complete", "verdict": "grokked", "grok_step": 900, "best_test_acc": 1.0,
            "model": "/../../../victim/README"}, config={
            "op": "x^2+y^2", "p": 97, "frac": 0.5, "seed": i,
            "task": {"name": "poly", "_target_": "evilmod.Evil"},
            "model": {"name": "../../../victim/README", "_target_": "evilmod.build"},
            "optimizer": {"name": "adamw", "_target_": "evilmod.Rule", "lr": lr},
            "loss": {"name": "stablemax", "fn": {"_target_": "evilmod.loss"}}})

    class FakeApi:
        def runs(self, path, filters=None):
            return [run(0, "/../../../victim/a"), run(1, "/../../../victim/b")]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    world = tmp_path / "world"
    (world / "victim").mkdir(parents=True)
    before = tree(world)
    for cmd in ("grid", "exponents"):
        main([cmd, "--wandb", "me/grok", "--group", "../../../victim", "--out", str(world / "out")])
    changed = changes(before, tree(world))
    assert changed and all(Path(k).parent == Path("out") for k in changed), changed
    assert any("optimizer.lr" in k for k in changed)  # one table per lr, named by a slug of it
    assert not evil.exists()
