"""Every config composes and validates; the documented command lines expand as documented."""

import itertools

import pytest
from conftest import CONF, compose_cfg

from grok.checks import check
from launch import plan


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Every task with every model, and every optimizer with every logger (the two pairs do not
# interact; their full product would be hundreds of composes).
COMBOS = [(t, m, "adamw", "wandb") for t, m in itertools.product(options("task"), options("model"))] + [
    ("add", "nanda", o, lg) for o, lg in itertools.product(options("optimizer"), options("logger"))]


@pytest.mark.parametrize("task,model,optimizer,logger", COMBOS)
def test_every_group_combination_composes_and_validates(task, model, optimizer, logger):
    cfg = compose_cfg([f"task={task}", f"model={model}", f"optimizer={optimizer}",
                       f"logger={logger}"])
    from grok.config import ConfigError
    from grok.tasks import build_task

    if model == "mlp" and len(build_task(cfg).positions) > 1:  # the MLP answers at the end only
        with pytest.raises(ConfigError, match="model=mlp answers at the last position only"):
            check(cfg)
        return
    t = check(cfg)
    assert cfg.task.name == task and cfg.model.name == model and cfg.optimizer.name == optimizer
    assert t.name == task and t.describe() and t.vocab > 0 and t.n_out > 0
    assert hasattr(t, "op") == (cfg.op is not None)  # modular tasks: the default op parses


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_validates(experiment):
    check(compose_cfg([f"experiment={experiment}"]))


def test_default_is_the_small_fast_config():
    cfg = compose_cfg()
    assert (cfg.p, cfg.frac, cfg.model.d_model, cfg.optimizer.lr) == (59, 0.4, 64, 3e-3)
    assert cfg.op == "x+y" and cfg.model.name == "nanda"


def test_nanda_reference_preset():
    cfg = compose_cfg(["experiment=nanda"])
    assert (cfg.p, cfg.frac, cfg.op, cfg.model.d_model, cfg.model.d_mlp) == (113, 0.3, "x+y", 128, 512)
    assert (cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.weight_decay) == \
        (1e-3, [0.9, 0.98], 1.0)
    assert cfg.optimizer.warmup_steps == 10 and cfg.model.pos_embed and cfg.model.mlp_bias


def test_furuta_preset():
    cfg = compose_cfg(["experiment=furuta", "task=poly", "op=x2+y2"])
    assert (cfg.p, cfg.model.layout, cfg.model.pos_embed, cfg.model.mlp_bias) == (97, "furuta", False, False)
    assert check(cfg).op.canonical == "x^2+y^2"


def test_readme_sweep_command_expands_to_three_jobs_with_string_op():
    jobs, multirun, remote = plan(["-m", "task=poly", "op=x2+xy+y2", "frac=0.3,0.5,0.7"])
    assert not remote
    assert multirun and len(jobs) == 3
    cfgs = [compose_cfg(j) for j in jobs]
    assert [c.frac for c in cfgs] == [0.3, 0.5, 0.7]
    assert all(c.op == "x2+xy+y2" and check(c).op.canonical == "x^2+xy+y^2" for c in cfgs)


def test_op_override_with_quotes_reaches_the_parser_intact():
    jobs, *_ = plan(["task=poly", "op='(x+y)^3'"])
    assert check(compose_cfg(jobs[0])).op.canonical == "x^3+3x^2y+3xy^2+y^3"


@pytest.mark.parametrize("preset,n_jobs", [("furuta_table", 35 * 7 * 3), ("exponents", 81 * 3)])
def test_table_presets_expand_and_validate_every_job(preset, n_jobs):
    from launch import check

    jobs, *_ = plan(["-m", f"experiment={preset}"])
    assert len(jobs) == n_jobs
    assert check(["-m", f"experiment={preset}"]) == (None, n_jobs)


def test_furuta_table_covers_every_seed002_group():
    from grok.opkinds import KIND_ORDER, op_kind
    from grok.ops import parse_op

    jobs, *_ = plan(["-m", "experiment=furuta_table"])
    ops = {o.split("=", 1)[1].strip("'") for job in jobs for o in job if o.startswith("op=")}
    kinds = {op_kind(parse_op(op)) for op in ops}
    assert kinds == set(KIND_ORDER) - {"division"}


def test_command_line_narrows_a_preset_sweep():
    jobs, *_ = plan(["-m", "experiment=exponents", "p=113"])
    assert len(jobs) == 81


def test_only_jobs_sent_to_slurm_skip_the_local_cuda_check():
    """A login node need not have the compute nodes' GPUs; local launchers must have CUDA here."""
    assert plan(["-m", "hydra/launcher=slurm_packed", "seed=0,1"])[2]
    assert plan(["-m", "hydra/launcher=slurm", "seed=0,1"])[2]
    assert not plan(["-m", "hydra/launcher=packed", "seed=0,1"])[2]
    assert not plan(["seed=0"])[2]
