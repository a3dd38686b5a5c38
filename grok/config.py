"""Checks a composed run config before anything is written, so bad input costs one clear line.

Imports no torch: launch.py runs this on every job of a sweep before starting any.
"""

import re

from omegaconf import DictConfig

from grok.ops import Op, OpError, parse_op

TASK_OPS = {"add": "x+y", "sub": "x-y", "mul": "x*y", "div": "x/y"}  # tasks that fix their op
TASKS = (*TASK_OPS, "poly")
OPTIMIZERS = ("adamw", "adam", "sgd")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
CRITERIA = ("held",)
DTYPES = ("float32", "float64")
LAYOUTS = ("nanda", "furuta")  # [x, y, =] and [x, op, y]; see grok.data
ARCHS = ("transformer", "mlp")
IMPLS = ("auto", "tables", "full", "hooked")  # see grok.models.build_model


def n_train_for(frac: float, n: int) -> int:
    return int(round(frac * n))


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the key and the value."""


def _int(cfg, key, lo=None):
    v = _select(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
        need = "an integer" + (f" >= {lo}" if lo is not None else "")
        raise ConfigError(f"{key}={v!r}: must be {need}")
    return v


def _num(cfg, key, lo, hi, lo_open=True, hi_open=True):
    v = _select(cfg, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(f"{key}={v!r}: must be a number in {lb}{lo}, {hi}{rb}")
    return v


def _select(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _choice(cfg, key, options):
    v = _select(cfg, key)
    if v not in options:
        raise ConfigError(f"{key}={v!r}: unknown (choose from {', '.join(options)})")
    return v


def _device(cfg, here: bool) -> None:
    """cpu, cuda or cuda:N; with `here`, CUDA must be on this machine (torch is imported only to
    check that). Jobs sent to a cluster are checked on their node instead."""
    v = _select(cfg, "train.device")
    ok = isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v)
    if not ok:
        raise ConfigError(f"train.device={v!r}: must be cpu, cuda or cuda:N")
    if here and v.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(v.split(":")[1]) if ":" in v else 0
        if index >= n:
            raise ConfigError(f"train.device={v!r}: " + (
                "CUDA is not available on this machine" if not n else f"only {n} CUDA device(s)"))


def check_modular(cfg: DictConfig) -> Op:
    """The op and p of a modular task (add, sub, mul, div, poly); the parsed op."""
    task = _choice(cfg, "task.name", TASKS)
    try:
        op = parse_op(cfg.op)
        p = _int(cfg, "p", lo=2)
        op.check_p(p)
        if task in TASK_OPS and op.canonical != parse_op(TASK_OPS[task]).canonical:
            raise ConfigError(f"op={cfg.op!r} conflicts with task={task} ({TASK_OPS[task]}); "
                              f"use task=poly for other ops")
    except OpError as e:
        raise ConfigError(str(e)) from None
    return op


def _data(cfg: DictConfig, task) -> None:
    """A finite task splits its universe by `frac`; a drawn one has n_train (null: infinite
    data, a fresh batch of task.batch every step) and n_test."""
    if task.finite:
        frac = _num(cfg, "frac", 0.0, 1.0)
        n = task.size()
        if not 1 <= n_train_for(frac, n) < n:
            raise ConfigError(f"frac={frac!r}: leaves an empty train or test set of the {n} examples "
                              f"of {task.describe()}")
        return
    n_test = _int(cfg, "task.n_test", lo=1)
    if cfg.task.get("n_train") is None:
        _int(cfg, "task.batch", lo=1)
        return
    n_train, most = _int(cfg, "task.n_train", lo=1), task.capacity()
    if n_train + n_test > most:
        raise ConfigError(f"task.n_train={n_train}: with task.n_test={n_test}, more than the {most} "
                          f"distinct examples of {task.describe()}")


def _model(cfg: DictConfig, task) -> None:
    m = cfg.model
    arch = _choice(cfg, "model.arch", ARCHS)
    if arch == "mlp":
        for key in ("d_model", "d_mlp"):
            _int(cfg, f"model.{key}", lo=1)
        if tuple(task.positions) != (task.n_ctx - 1,):
            raise ConfigError(f"model=mlp answers at the last position only; task {task.name} has "
                              f"targets at {len(task.positions)} positions")
        return
    _choice(cfg, "model.layout", LAYOUTS)
    _choice(cfg, "model.impl", IMPLS)
    for key in ("d_model", "n_heads", "d_head", "d_mlp", "n_layers"):
        _int(cfg, f"model.{key}", lo=1)
    for key in ("attn_only", "pos_embed", "mlp_bias"):
        if not isinstance(m.get(key), bool):
            raise ConfigError(f"model.{key}={m.get(key)!r}: must be true or false")
    if m.get("normalization") not in (None, "LN"):
        raise ConfigError(f"model.normalization={m.get('normalization')!r}: null or LN")
    _choice(cfg, "model.act", ("relu", "gelu"))
    if m.impl in ("tables", "full") and not tables_exact(cfg, task):
        raise ConfigError(f"model.impl={m.impl}: the one-layer model needs n_layers=1, an MLP, no "
                          f"LayerNorm, ReLU and one answer at the last position; use model.impl=auto")


def tables_exact(cfg: DictConfig, task) -> bool:
    """Where the one-layer token-table model computes exactly this config's transformer."""
    m = cfg.model
    return (m.n_layers == 1 and not m.attn_only and m.normalization is None and m.act == "relu"
            and tuple(task.positions) == (task.n_ctx - 1,))


def validate(cfg: DictConfig, device_here: bool = True):
    """Raise ConfigError on the first bad value; return the run's Task. `device_here=False`
    skips the check that the CUDA device exists on this machine (for jobs sent to other nodes)."""
    from grok.tasks import build_task

    task = build_task(cfg)
    _data(cfg, task)
    _int(cfg, "seed", lo=0)
    _model(cfg, task)
    _choice(cfg, "optimizer.name", OPTIMIZERS)
    _num(cfg, "optimizer.lr", 0.0, float("inf"))
    _num(cfg, "optimizer.weight_decay", 0.0, float("inf"), lo_open=False)
    _int(cfg, "optimizer.warmup_steps", lo=0)
    for key in ("steps", "eval_every", "checkpoint_every"):
        _int(cfg, f"train.{key}", lo=1)
    _choice(cfg, "train.dtype", DTYPES)
    _device(cfg, device_here)
    for key in ("threads", "chunk"):
        if cfg.train.get(key) is not None:
            _int(cfg, f"train.{key}", lo=1)
    if cfg.train.early_stop_after is not None:
        _int(cfg, "train.early_stop_after", lo=0)
    _int(cfg, "measures.every", lo=0)
    _int(cfg, "measures.full_every", lo=0)
    _num(cfg, "measures.eta", 0.0, 1.0)
    keys, p = cfg.measures.key_freqs, cfg.p
    if keys is not None and (isinstance(keys, (str, int)) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= p // 2 for k in keys)):
        raise ConfigError(f"measures.key_freqs={keys!r}: must be a list of frequencies in 1..{p // 2}")
    _choice(cfg, "grok.criterion", CRITERIA)
    _num(cfg, "grok.threshold", 0.0, 1.0, hi_open=False)
    _num(cfg, "grok.delay_ratio", 1.0, float("inf"), lo_open=False)
    if _choice(cfg, "logger.name", LOGGERS) == "wandb":
        _choice(cfg, "logger.mode", WANDB_MODES)
    return task
