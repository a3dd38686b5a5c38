"""Checks a composed run config before anything is written, so bad input costs one clear line.

Imports no torch: launch.py runs this on every job of a sweep before starting any. `validate`
checks every value, one concern at a time (task and op, model, optimizer, train, measures, grok,
logger, then the memory a run would need); `check_keys` refuses keys no config group defines
(`+fracc=0.3`) and keys an override removed (`~p`).
"""

import difflib
import math
import re
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grok.hardware import DTYPE_BYTES, DTYPES, is_gpu
from grok.layouts import LAYOUTS, N_CTX, vocab_size
from grok.ops import MAX_P, Op, OpError, parse_op
from grok.verdict import CRITERIA

TASK_OPS = {"add": "x+y", "sub": "x-y", "mul": "x*y", "div": "x/y"}  # tasks that fix their op
TASKS = (*TASK_OPS, "poly")
OTHER_TASKS = ("digits_add", "repeat_subseq", "max_element", "sort", "prime", "gcd", "mixture")  # grok.tasks
GROKFAST_FILTERS = ("ema", "ma")  # grok.optim
# The update rule (grok.optim) that configs written before `optimizer._target_` named by their
# `optimizer.base` or else `optimizer.name`: a record of the past, it never grows.
TARGET_BEFORE = {"adamw": "grok.optim.AdamW", "adam": "grok.optim.Adam", "sgd": "grok.optim.SGD"}
LOSSES = ("cross_entropy", "stablemax")  # conf/loss/
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
IMPLS = ("auto", "tables", "full", "hooked")  # see conf/model/transformer.yaml
ARCHS = ("transformer", "mlp")
MAX_INT = 2**63 - 1            # every count and seed fits an int64 (torch, numpy, pandas, W&B)
MAX_THREADS = 1024             # more torch threads than any machine has cores is a typo


def n_train_for(frac: float, n: int) -> int:
    return int(round(frac * n))


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the key and the value."""


# -- reading values --------------------------------------------------------------------------
# The checks read a plain copy of the config (dicts and lists), resolving only the interpolations
# they meet: reading a DictConfig key costs ~20 us and resolving an interpolation ~1 ms, and a
# 700-job sweep is checked before it starts.

class _View:
    """A config as plain containers (interpolations unresolved) and the config itself."""

    def __init__(self, cfg):
        self.cfg = cfg if isinstance(cfg, DictConfig) else None
        self.raw = OmegaConf.to_container(cfg, resolve=False) if self.cfg is not None else cfg


def view(cfg) -> _View:
    return cfg if isinstance(cfg, _View) else _View(cfg)


def _interpolated(x) -> bool:
    if isinstance(x, str):
        return "${" in x
    if isinstance(x, (list, dict)):
        return any(_interpolated(v) for v in (x.values() if isinstance(x, dict) else x))
    return False


def select(cfg: _View, key: str):
    """The value at the dotted `key`; a missing key, a `???` or a failing interpolation is a
    ConfigError naming the key."""
    node = cfg.raw
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i + 1])
            raise ConfigError(f"{where}: missing (removed by a ~ override?); a run needs every key "
                              f"of the config")
        node = node[part]
    if node == "???":
        raise ConfigError(f"{key}=???: needs a value")
    if cfg.cfg is not None and _interpolated(node):
        raw = node
        try:
            node = OmegaConf.select(cfg.cfg, key, throw_on_missing=True)
            node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{key}={raw}: {msg}") from None
    return node


def check_int(cfg, key, lo=None, hi: int | None = MAX_INT):
    v = select(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
        need = "an integer" + (f" >= {lo}" if lo is not None else "")
        hint = " (write it without a decimal point)" if isinstance(v, float) and v.is_integer() else ""
        raise ConfigError(f"{key}={v!r}: must be {need}{hint}")
    if hi is not None and v > hi:
        why = " (2^63 - 1: it must fit an int64)" if hi == MAX_INT else ""
        raise ConfigError(f"{key}={v!r}: must be at most {hi}{why}")
    return v


def _num(cfg, key, lo, hi, lo_open=True, hi_open=True):
    v = select(cfg, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(f"{key}={v!r}: must be a number in {lb}{lo}, {hi}{rb}")
    return v


def _bool(cfg, key):
    v = select(cfg, key)
    if not isinstance(v, bool):
        raise ConfigError(f"{key}={v!r}: must be true or false")
    return v


def _str(cfg, key, optional=False):
    v = select(cfg, key)
    if not (isinstance(v, str) and v.strip()) and not (optional and v is None):
        raise ConfigError(f"{key}={v!r}: must be a non-empty string" + (" or null" if optional else ""))
    return v


def _choice(cfg, key, options):
    v = select(cfg, key)
    if isinstance(v, (bool, list, dict)) or v not in options:
        raise ConfigError(f"{key}={v!r}: unknown (choose from {', '.join(map(str, options))})")
    return v


# -- the keys themselves -----------------------------------------------------------------------

def check_keys(cfg, reference: DictConfig | dict) -> None:
    """Refuse keys that the config groups chosen do not define (`+fracc=0.3`: a typo would
    otherwise be ignored) and keys an override removed (`~p`, `~grok`), comparing `cfg` with
    `reference`, the config the same group choices compose to without value overrides (or that
    as plain containers, `OmegaConf.to_container(reference)`). Interpolations are not resolved."""
    if not isinstance(reference, dict):
        reference = OmegaConf.to_container(reference, resolve=False)
    _same_keys(view(cfg).raw, reference, "")


def _same_keys(got: dict, want: dict, prefix: str) -> None:
    for k in want:
        if k not in got:
            raise ConfigError(f"{prefix}{k}: missing (removed with ~{prefix}{k}?); a run needs every "
                              f"key of the config")
    for k, v in got.items():
        if k not in want:
            # `trian.steps=10` arrives as trian={'steps': 10}: name it as it was typed
            rest, value = "", v
            while isinstance(value, dict) and len(value) == 1:
                (inner, value), = value.items()
                rest += f".{inner}"
            close = difflib.get_close_matches(str(k), [str(w) for w in want], n=1)
            hint = f"did you mean {prefix}{close[0]}{rest}?" if close else \
                f"known: {', '.join(prefix + str(w) for w in want)}"
            raise ConfigError(f"{prefix}{k}{rest}={value!r}: unknown key ({hint})")
        if isinstance(want[k], dict):
            if not isinstance(v, dict):
                first = next(iter(want[k]), "key")
                raise ConfigError(f"{prefix}{k}={v!r}: must be a group of keys "
                                  f"({', '.join(map(str, want[k]))}); set them one at a time, "
                                  f"e.g. {prefix}{k}.{first}=...")
            _same_keys(v, want[k], f"{prefix}{k}.")


# -- one concern at a time -----------------------------------------------------------------

def check_modular(cfg) -> tuple[Op, int]:
    """The op of a modular task (grok.tasks.modular), checked as `_task` checks it, and the
    number of its labelled pairs."""
    op, _, n = _task(view(cfg))
    return op, n


def _task(cfg) -> tuple[Op, int, int]:
    """task, op, p of a modular task: the op parses, fits p, agrees with the task and is
    learnable mod p. Returns (op, p, number of labelled pairs)."""
    task = _choice(cfg, "task.name", TASKS)
    op_text = select(cfg, "op")
    p = check_int(cfg, "p", lo=2, hi=None)
    if p > MAX_P:
        raise ConfigError(f"p={p}: must be at most {MAX_P} (a run trains on all p*p pairs and "
                          f"its memory grows like p^3; README: Limits)")
    try:
        op = parse_op(op_text)
        op.check_p(p)
        if task in TASK_OPS and op.canonical != parse_op(TASK_OPS[task]).canonical:
            raise ConfigError(f"op={op_text!r} conflicts with task={task} ({TASK_OPS[task]}); "
                              f"use task=poly for other ops")
        n = op.check_learnable(p)
    except OpError as e:
        raise ConfigError(str(e)) from None
    return op, p, n


def _data(cfg, task) -> None:
    """A finite task splits its universe by `frac`; a drawn one has n_train (null: infinite
    data, a fresh batch of task.batch every step) and n_test."""
    check_int(cfg, "seed", lo=0)
    if task.finite:
        frac = _num(cfg, "frac", 0.0, 1.0)
        for n in task.part_sizes():  # a mixture splits each op's pairs on their own
            if not 1 <= n_train_for(frac, n) < n:
                where = f"pairs at p={task.p}" if hasattr(task, "op") else f"examples of {task.describe()}"
                raise ConfigError(f"frac={frac!r}: leaves an empty train or test set of the {n} {where}")
        return
    n_test = check_int(cfg, "task.n_test", lo=1)
    if select(cfg, "task.n_train") is None:
        check_int(cfg, "task.batch", lo=1)
        return
    n_train, most = check_int(cfg, "task.n_train", lo=1), task.capacity()
    if n_train + n_test > most:
        raise ConfigError(f"task.n_train={n_train}: with task.n_test={n_test}, more than the {most} "
                          f"distinct examples of {task.describe()}")


def _model(cfg, task) -> None:
    """(model.name and model.layout are checked before the task is built: see validate.)"""
    if _choice(cfg, "model.arch", ARCHS) == "mlp":
        for key in ("d_model", "d_mlp"):
            check_int(cfg, f"model.{key}", lo=1)
        if tuple(task.positions) != (task.n_ctx - 1,):
            raise ConfigError(f"model=mlp answers at the last position only; task {task.name} has "
                              f"targets at {len(task.positions)} positions")
        return
    impl = _choice(cfg, "model.impl", IMPLS)
    for key in ("d_model", "n_heads", "d_head", "d_mlp", "n_layers"):
        check_int(cfg, f"model.{key}", lo=1)  # how large: the memory estimate decides (_memory)
    for key in ("pos_embed", "mlp_bias", "attn_only"):
        _bool(cfg, f"model.{key}")
    _choice(cfg, "model.normalization", (None, "LN"))
    _choice(cfg, "model.act", ("relu", "gelu"))
    if impl in ("tables", "full") and not tables_exact(cfg, task):
        raise ConfigError(f"model.impl={impl}: the one-layer model needs n_layers=1, an MLP, no "
                          f"LayerNorm, ReLU and one answer at the last position; use model.impl=auto")


def tables_exact(cfg, task) -> bool:
    """Where the one-layer token-table model computes exactly this config's transformer."""
    c = view(cfg)
    m = {k: select(c, f"model.{k}") for k in ("n_layers", "attn_only", "normalization", "act")}
    return (m["n_layers"] == 1 and not m["attn_only"] and m["normalization"] is None
            and m["act"] == "relu" and tuple(task.positions) == (task.n_ctx - 1,))


@dataclass(frozen=True)
class Bound:
    """What the check accepts for one hyperparameter of an update rule (grok.optim's `HYPER`):
    a number from lo to hi (each end open or closed), an integer >= lo (`integer`), or a list
    of `n` such numbers (n > 1)."""

    lo: float
    hi: float = math.inf
    lo_open: bool = True
    hi_open: bool = True
    integer: bool = False
    n: int = 1


def _bounded(cfg, key: str, b: Bound) -> None:
    if b.integer:
        check_int(cfg, key, lo=b.lo)
    elif b.n == 1:
        _num(cfg, key, b.lo, b.hi, b.lo_open, b.hi_open)
    else:
        v = select(cfg, key)
        ok = isinstance(v, list) and len(v) == b.n and all(
            isinstance(x, (int, float)) and not isinstance(x, bool)
            and (x > b.lo if b.lo_open else x >= b.lo) and (x < b.hi if b.hi_open else x <= b.hi) for x in v)
        if not ok:
            lb, rb = "(" if b.lo_open else "[", ")" if b.hi_open else "]"
            raise ConfigError(f"{key}={v!r}: must be a list of {b.n} numbers in {lb}{b.lo}, {b.hi}{rb}")


def _optimizer(cfg, rule) -> None:
    """The optimizer's name, gradient transforms and the hyperparameters its update rule declares
    (`rule`: the class `optimizer._target_` names, grok.optim.update_rule)."""
    _str(cfg, "optimizer.name")
    _transforms(cfg)
    for key, bound in rule.HYPER.items():
        _bounded(cfg, f"optimizer.{key}", bound)


def _transforms(cfg) -> None:
    """Grokfast and ⊥Grad keys (grok.optim), where the optimizer config has them."""
    raw = view(cfg).raw.get("optimizer", {})
    if "orthogonal" in raw:
        _bool(cfg, "optimizer.orthogonal")
    if raw.get("grokfast") is None:
        return
    kind = _choice(cfg, "optimizer.grokfast.filter", GROKFAST_FILTERS)
    _num(cfg, "optimizer.grokfast.lamb", 0.0, math.inf, lo_open=False)
    if kind == "ema":
        _num(cfg, "optimizer.grokfast.alpha", 0.0, 1.0, lo_open=False)
    else:
        check_int(cfg, "optimizer.grokfast.window", lo=1, hi=100_000)


def _loss(cfg) -> None:
    if view(cfg).raw.get("loss") is not None:
        _choice(cfg, "loss.name", LOSSES)


def _train(cfg, device_here: bool) -> None:
    for key in ("steps", "eval_every", "checkpoint_every"):
        check_int(cfg, f"train.{key}", lo=1)
    if select(cfg, "train.early_stop_after") is not None:
        check_int(cfg, "train.early_stop_after", lo=0)
    _choice(cfg, "train.dtype", DTYPES)
    _device(cfg, device_here)
    if select(cfg, "train.threads") is not None:
        check_int(cfg, "train.threads", lo=1, hi=MAX_THREADS)
    if select(cfg, "train.chunk") is not None:
        check_int(cfg, "train.chunk", lo=1)
    if select(cfg, "train.snapshot_every") is not None:
        check_int(cfg, "train.snapshot_every", lo=1)
    if select(cfg, "train.max_memory_gb") is not None:
        _num(cfg, "train.max_memory_gb", 0.0, math.inf)


def _device(cfg, here: bool) -> None:
    """cpu, cuda or cuda:N; with `here`, CUDA must be on this machine (torch is imported only to
    check that). Jobs sent to a cluster are checked on their node instead."""
    v = select(cfg, "train.device")
    ok = isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v)
    if not ok:
        raise ConfigError(f"train.device={v!r}: must be cpu, cuda or cuda:N")
    if here and is_gpu(v):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(v.split(":")[1]) if ":" in v else 0
        if index >= n:
            raise ConfigError(f"train.device={v!r}: " + (
                "CUDA is not available on this machine" if not n else f"only {n} CUDA device(s)"))


def _measures(cfg, p: int) -> None:
    check_int(cfg, "measures.every", lo=0)
    check_int(cfg, "measures.full_every", lo=0)
    _num(cfg, "measures.eta", 0.0, 1.0)
    keys = select(cfg, "measures.key_freqs")
    if keys is None:
        return
    need = f"must be null (the current key frequencies) or a non-empty list of frequencies in 1..{p // 2}"
    if not isinstance(keys, list) or not keys or not all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= p // 2 for k in keys):
        raise ConfigError(f"measures.key_freqs={keys!r}: {need}")
    if len(set(keys)) < len(keys):
        raise ConfigError(f"measures.key_freqs={keys!r}: lists a frequency twice")


def _grok(cfg) -> None:
    _choice(cfg, "grok.criterion", CRITERIA)
    _num(cfg, "grok.threshold", 0.0, 1.0, hi_open=False)
    _num(cfg, "grok.delay_ratio", 1.0, math.inf, lo_open=False)
    _num(cfg, "grok.onset", 0.0, 1.0, hi_open=False)
    check_int(cfg, "grok.window", lo=1)


MAX_SWEEP_ID = 128  # a folder name (outputs/sweeps/<id>) and a W&B group, with room to spare


def check_sweep_id(value) -> None:
    """`sweep_id` names one folder under outputs/sweeps/ (and outputs/runs/): never a path out of
    it (`../../x`, `a/b`), nor empty, nor longer than a folder name may be."""
    text = str(value)
    why = ("is empty" if not text.strip() else
           "names no folder" if text in (".", "..") else
           "holds a path separator" if any(c in text for c in "/\\\0") else
           f"is {len(text)} characters, more than {MAX_SWEEP_ID}" if len(text) > MAX_SWEEP_ID else None)
    if why:
        shown = text if len(text) <= 60 else f"{text[:57]}..."
        raise ConfigError(f"sweep_id={shown!r}: {why}; a sweep id names one folder under "
                          f"outputs/sweeps/ (letters, digits, - _ . and the like)")


def _logger(cfg) -> None:
    if _choice(cfg, "logger.name", LOGGERS) == "wandb":
        _choice(cfg, "logger.mode", WANDB_MODES)
        _str(cfg, "logger.project")
        _str(cfg, "logger.entity", optional=True)
        _bool(cfg, "logger.log_plot")
        _bool(cfg, "logger.log_checkpoint")


# -- what a run can afford -------------------------------------------------------------------

def param_copies(cfg) -> int:
    """Parameter-sized tensors a run keeps while it trains: weights, gradients, two Adam moments,
    and a Grokfast filter's state (its EMA, or the last `window` gradients: Grokfast-MA at window
    100 keeps 100 copies, by far the largest part for small models)."""
    grokfast = select(view(cfg), "optimizer").get("grokfast") or {}
    return 4 + {"ema": 1, "ma": int(grokfast.get("window") or 0)}.get(grokfast.get("filter"), 0)


def memory_estimate(cfg, n_pairs: int, vocab: int | None = None) -> dict[str, int]:
    """Rough peak bytes of one run trained alone, by part. The peak is weights + data + the
    largest of train, test and measures (a pack of R runs needs about R times that; the packed
    launcher sizes its packs itself). `vocab`: the task's input tokens (a mixture adds one per
    op), by default the layout's.

    - weights: parameters, their gradients, two Adam moments and any Grokfast state
      (`param_copies`);
    - data: tokens, labels and indices of every pair, and the p x p grid of the measures;
    - train: one forward and backward over the train set. Per example: the logits over p
      classes with their float64 log-softmax and its gradient (the term that grows like p^3),
      and the activations kept for the backward (MLP pre and post, residuals, the attention's
      gathered values; with impl=full every position, and the weights broadcast over the batch
      that its matmuls materialise); with impl=tables also the token tables (attention scores
      of every pair of vocabulary tokens);
    - test: the forward over the test set (no backward);
    - measures: the forward over all p*p pairs with the MLP activations kept, their float64
      copy for the key frequencies, and the float64 logits of restricted and excluded loss
      (if measures.full_every > 0).
    Against the peak RSS of runs on CPU (less that of the process before the run), from 0.1 to
    3 GB, p 101 to 331, both impls, float32 and float64: 1 to 2 times the measurement (above it,
    so a run that passes fits; tests/test_faults_input.py checks one)."""
    c = view(cfg)
    m = {k: select(c, f"model.{k}") for k in ("d_model", "n_heads", "d_head", "d_mlp", "layout",
                                                 "impl", "pos_embed", "mlp_bias")}
    if m["impl"] in ("auto", "hooked"):  # auto is the tables wherever a modular op runs on 1 layer
        m["impl"] = "tables" if m["impl"] == "auto" and select(c, "model.n_layers") == 1 else "full"
    p, w = select(c, "p"), DTYPE_BYTES[select(c, "train.dtype")]
    d, h, e, f = m["d_model"], m["n_heads"], m["d_head"], m["d_mlp"]
    vocab = vocab or vocab_size(m["layout"], p)
    params = (vocab * d + N_CTX * d * m["pos_embed"] + 4 * h * d * e + 2 * d * f
              + (f + d) * m["mlp_bias"] + d * p)
    if m["impl"] == "full":
        acts = N_CTX * (4 * f + 8 * d + 4 * h * e + 2 * N_CTX * h + p) + 2 * d * f + d * p + 4 * h * d * e
        tables = 0
    else:
        acts = 4 * f + 8 * d + 2 * N_CTX * h + 6 * N_CTX * h * e
        rows = (N_CTX if m["pos_embed"] else 1) * vocab
        tables = 4 * rows * (vocab * h + 2 * h * e + d) * w
    train = acts * w + p * (2 * w + 3 * 8)
    test = acts * w // 2 + p * (w + 2 * 8)
    n_train = n_train_for(select(c, "frac"), n_pairs)
    measures = select(c, "measures.full_every") > 0
    grid = p * p
    return {
        "weights": param_copies(c) * params * w,
        "data": n_pairs * 8 * 6 + grid * 8 * 4,
        "train": tables + n_train * train,
        "test": tables + (n_pairs - n_train) * test,
        "measures": measures * grid * (p * (w + 3 * 8) + f * (2 * w + 8) + 3 * d * w),
    }


def peak_bytes(parts: dict[str, int]) -> int:
    """The peak of a run whose `memory_estimate` is `parts`: weights and data stay, and train,
    test and measures take turns. The up-front check refuses runs by it and the packed launcher
    sizes its packs by it."""
    return parts["weights"] + parts["data"] + max(parts["train"], parts["test"], parts["measures"])


def _memory(cfg, task) -> None:
    """Refuse a run whose estimated peak memory exceeds train.max_memory_gb (null: no limit)."""
    budget = select(cfg, "train.max_memory_gb")
    if budget is None:
        return
    parts = memory_estimate(cfg, task.size(), task.vocab)
    peak = peak_bytes(parts)
    if peak > budget * 2**30:
        big = max(parts, key=parts.get)
        p, frac, m = (select(cfg, k) for k in ("p", "frac", "model"))
        raise ConfigError(
            f"p={p}, frac={frac}, model d_model={m['d_model']} n_heads={m['n_heads']} "
            f"d_head={m['d_head']} d_mlp={m['d_mlp']}: a run needs about {peak / 2**30:.3g} GB "
            f"(mostly {big}: {parts[big] / 2**30:.3g} GB), above train.max_memory_gb={budget}; "
            f"use a smaller p or model{', or measures=off' if big == 'measures' else ''}, "
            f"or raise train.max_memory_gb where the memory is there")


def validate_choices(cfg: DictConfig, reference: DictConfig | dict | None = None) -> None:
    """What must hold before a task can be built from `cfg`: the task, model name and layout are
    known choices. With a `reference` (the config of the same group choices), also no key added
    or removed (`check_keys`)."""
    cfg = view(cfg)
    if reference is not None:
        check_keys(cfg, reference)
    _choice(cfg, "task.name", (*TASKS, *OTHER_TASKS))
    _str(cfg, "model.name")
    _choice(cfg, "model.layout", LAYOUTS)  # a modular task's tokens


def validate(cfg: DictConfig, task, rule, device_here: bool = True) -> None:
    """Raise ConfigError on the first bad value of `cfg`, whose task (grok.tasks; it checks its
    own values as it is built) is `task`. `device_here=False` skips the check that the CUDA
    device exists on this machine (for jobs sent to other nodes). Building the task and checking
    the init group are the caller's: grok.checks.check."""
    cfg = view(cfg)
    _data(cfg, task)
    _model(cfg, task)
    _optimizer(cfg, rule)
    _loss(cfg)
    _train(cfg, device_here)
    _measures(cfg, select(cfg, "p"))
    _grok(cfg)
    _logger(cfg)
    check_sweep_id(select(cfg, "sweep_id"))
    if (hasattr(task, "op") or hasattr(task, "ops")) and select(cfg, "model.arch") == "transformer":
        _memory(cfg, task)  # estimated for modular ops (p x p pairs and grids)
