"""Every task with every model: each pair of conf/task x conf/model trains a few steps through the
real trainer with the default measures, or the up-front check refuses it with one line naming
the pair. Tasks and models are read from the folders, so a new one is covered by being there.

A measure that does not apply to a model (attention of the MLP, the Fourier measures of a model
without the one-layer W_L) is left out of the metrics and named, with why, in the summary's
`measures_skipped`; the attention measures of the token-table model equal the general model's."""

import json

import pytest
import torch
from conftest import CONF, compose_cfg, launch, read_metrics
from omegaconf import OmegaConf
from test_hooked import TO_HOOKED

import grok.probes as probes
from grok.checks import check_run
from grok.config import ConfigError
from grok.models import MLP, HookedTransformer, Transformer
from grok.train import run

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
MODULAR = {"add", "sub", "mul", "div", "poly", "mixture"}
# Pairs the up-front check refuses: the MLP answers at the last position only.
REFUSED = {(t, "mlp") for t in ("digits_add", "gcd", "repeat_subseq", "sort")}
# Pairs that train with a measure left out: {pair: skipped measure}.
SKIPPED = {**{(t, m): "fourier" for t in MODULAR for m in ("attn_only", "mlp")},
           ("max_element", "mlp"): "attn_to_max"}
# A key each task's own measures log (absent where the measure is skipped).
KEY = {**{t: "fcr_embed" for t in MODULAR}, "max_element": "attn_to_max",
       "repeat_subseq": "induction_score_max", "gcd": "acc_gcd_smooth", "digits_add": "weight_sq_total",
       "prime": "weight_sq_total", "sort": "weight_sq_total"}
# Small sizes, kept only where the task or model has the key; eval at steps 0 and 2; default measures.
SMALL = {"p": 7, "model.d_model": 16, "model.d_head": 4, "model.d_mlp": 16, "task.n_train": 24,
         "task.n_test": 24, "task.batch": 16, "task.n_max": 60, "train.steps": 2, "train.eval_every": 2,
         "train.checkpoint_every": 1000, "train.early_stop_after": None}


def small(task: str, model: str):
    cfg = compose_cfg([f"task={task}", f"model={model}", "logger=none", "measures=default"])
    for key, value in SMALL.items():
        group, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, group) if group else cfg
        if leaf in node:
            node[leaf] = value
    return cfg


def test_the_matrix_covers_every_task_and_model():
    assert len(TASKS) >= 12 and len(MODELS) >= 5 and set(KEY) == set(TASKS)
    assert REFUSED | set(SKIPPED) <= {(t, m) for t in TASKS for m in MODELS}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_with_every_model_or_is_refused_in_one_line(task, model, tmp_path):
    cfg = small(task, model)
    if (task, model) in REFUSED:
        with pytest.raises(ConfigError) as e:
            check_run(cfg)
        line = str(e.value)
        assert "\n" not in line and f"model={model}" in line and task in line
        return
    s = run(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert (s["status"], s["steps"]) == ("complete", 2)
    assert [r["step"] for r in rows] == [0, 2]
    skipped = s.get("measures_skipped", {})
    assert set(skipped) == ({SKIPPED[task, model]} if (task, model) in SKIPPED else set())
    assert all(why for why in skipped.values())
    for r in rows:  # the measures ran at both evals (the default set: full at 0 and at the end)
        assert "weight_sq_total" in r
        assert (KEY[task] in r) == (not skipped), (KEY[task], sorted(r))
    if task == "max_element":  # the loss per maximum reads logits only: every model has it
        assert any(k.startswith("loss_by_max/") for k in rows[-1])
    if task in MODULAR and not skipped:  # the full set (a mixture's per op: key_freqs/x+y)
        assert all(any(k.split("/")[0] == "key_freqs" for k in r) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("task,model", [(t, m) for t in TASKS for m in MODELS if (t, m) not in REFUSED])
def test_every_pair_at_its_own_sizes_measures_everything(task, model, tmp_path):
    """The fuller matrix: the configs' own sizes (p=113, widths, data sizes), every measure at
    every eval (measures=dense), three steps."""
    cfg = compose_cfg([f"task={task}", f"model={model}", "logger=none", "measures=dense",
                       "train.steps=3", "train.eval_every=1", "train.checkpoint_every=1000",
                       "train.early_stop_after=null"])
    s = run(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert (s["status"], [r["step"] for r in rows]) == ("complete", [0, 1, 2, 3])
    skipped = s.get("measures_skipped", {})
    assert set(skipped) == ({SKIPPED[task, model]} if (task, model) in SKIPPED else set())
    assert all((KEY[task] in r) == (not skipped) for r in rows)


def test_launch_refuses_a_pair_up_front_with_one_line_and_status_2(tmp_path):
    r = launch(["task=sort", "model=mlp", "logger=none"], cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model=mlp" in lines[0] and "sort" in lines[0], r.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # a launch of its own (~10 s on shared cores); the matrix trains the pair in-process
def test_launch_trains_max_element_on_the_default_model(tmp_path):
    """The issue's command, `python launch.py task=max_element` (model nanda: the token tables),
    cut to 2 steps: it used to fail in its first evaluation."""
    run_dir = tmp_path / "run"
    r = launch(["task=max_element", "train.steps=2", "train.eval_every=2", "logger=none",
                "model.d_model=16", "model.d_head=4", "model.d_mlp=16", "train.threads=1",
                f"hydra.run.dir='{run_dir}'"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    assert all("attn_to_max" in row for row in read_metrics(run_dir))


@pytest.mark.parametrize("impl", ["tables", "full"])
def test_attention_to_max_of_the_one_layer_model_equals_the_hooked_model(impl):
    """Same weights, same numbers: the token-table model's cache gives the pattern from END."""
    torch.manual_seed(0)
    dims = dict(vocab=17, n_out=15, n_ctx=13, d_model=16, n_heads=4, d_head=4, d_mlp=16)
    one = Transformer(**dims, impl=impl).double()
    general = HookedTransformer(**dims).double()
    general.load_state_dict({TO_HOOKED[k]: v for k, v in one.state_dict().items()})
    x = torch.stack([torch.randperm(15)[:11] for _ in range(64)])
    tokens = torch.cat([torch.full((64, 1), 15), x, torch.full((64, 1), 16)], dim=1)
    a, b = probes.attention_to_max(one, tokens), probes.attention_to_max(general, tokens)
    assert set(a) == set(b) and "attn_to_max/H3" in a
    assert all(a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12) for k in a)
    assert probes.skipped(one, "attn_to_max") == {} and probes.skipped(one, "induction")


def test_a_model_without_attention_gets_the_loss_by_max_only():
    torch.manual_seed(0)
    mlp = MLP(vocab=17, n_out=15, n_ctx=13, d_model=8, d_mlp=16)
    tokens = torch.cat([torch.full((32, 1), 15), torch.stack([torch.randperm(15)[:11] for _ in range(32)]),
                        torch.full((32, 1), 16)], dim=1)
    out = probes.attention_to_max(mlp, tokens)
    assert out and all(k.startswith("loss_by_max/") for k in out)
    assert set(probes.skipped(mlp, "attn_to_max")) == {"attn_to_max"}

