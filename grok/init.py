"""Where a run's weights start: its seeded init, or parts taken from another run, and which of them
never change (seed 002's pre-grokked modules and frozen random embedding).

The `init` config group (conf/init/):
- `init.from`: a finished run's folder (its checkpoint.pt) or a checkpoint file, relative to
  where the launch runs. Read with torch.load(weights_only=True), never unpickled.
- `init.load`: what is copied from it into the seeded model, before training.
- `init.freeze`: what never changes: no gradient, no weight decay, bit-identical at the end.

Both take parameter names, full (`blocks.0.attn.W_Q`) or their last part (`W_Q`: every layer's),
or a group: `embed` (W_E), `unembed` (W_U), `transformer` (everything between them: attention,
MLP, positions), `all_but_unembed`, `all`. `init=random_frozen_embed` freezes the seeded Gaussian
embedding itself (nothing loaded).

Everything is checked up front (`check_init`, called by grok.checks.check_run, so in preflight):
the source exists, is a finished run, has each loaded parameter with this run's shape; otherwise
one line naming the problem. A run's summary records the source (`init_*` keys): its path, its
checkpoint's step and a hash of the tensors loaded, as they were when the run started.
"""

import functools
import hashlib
from pathlib import Path

import torch
from omegaconf import OmegaConf

from grok.config import ConfigError, select, view
from grok.models import build_model
from grok.record import checkpoint
from grok.record.checkpoint import Unreadable
from grok.record.identity import init_active

GROUPS = {
    "embed": lambda names: [n for n in names if _leaf(n) == "W_E"],
    "unembed": lambda names: [n for n in names if _leaf(n) == "W_U"],
    "transformer": lambda names: [n for n in names if _leaf(n) not in ("W_E", "W_U")],
    "all_but_unembed": lambda names: [n for n in names if _leaf(n) != "W_U"],
    "all": lambda names: list(names),
}


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def resolve(patterns, names: list[str], key: str) -> list[str]:
    """The parameter names (of `names`, in their order) that `patterns` pick."""
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{key}={patterns!r}: must be a list of parameter names or groups "
                          f"({', '.join(GROUPS)}), e.g. {key}=[W_E]")
    picked = set()
    for pat in patterns:
        got = GROUPS[pat](names) if pat in GROUPS else [n for n in names if pat in (n, _leaf(n))]
        if not got:
            raise ConfigError(f"{key}: {pat!r} is no parameter of this model (its parameters: "
                              f"{', '.join(names)}; groups: {', '.join(GROUPS)})")
        picked.update(got)
    return [n for n in names if n in picked]


def _shapes(cfg, task) -> dict:
    """This run's parameter shapes, from a model built on the meta device (no memory, no RNG)."""
    with torch.device("meta"):
        model = build_model(cfg, task)
    return {n: tuple(w.shape) for n, w in model.named_parameters()}


def checkpoint_path(source) -> Path:
    path = Path(str(source)).expanduser()
    return path / "checkpoint.pt" if path.is_dir() else path


@functools.lru_cache(maxsize=32)
def _read(path: str, stamp) -> dict:
    return checkpoint.read(path)


def read_source(source) -> dict:
    """The finished source run's checkpoint, or a ConfigError naming what is wrong."""
    path = checkpoint_path(source)
    where = f"init.from={source}"
    if not Path(str(source)).expanduser().exists():
        raise ConfigError(f"{where}: no such run folder or checkpoint (train the source run first)")
    if not path.is_file():
        raise ConfigError(f"{where}: holds no checkpoint.pt (not a run folder, or a run that never "
                          f"checkpointed)")
    try:
        st = path.stat()
        ck = _read(str(path.resolve()), (st.st_mtime_ns, st.st_size))
    except Unreadable as e:
        raise ConfigError(f"{where}: {path} is not a readable checkpoint ({e})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise ConfigError(f"{where}: {path} is not a run's checkpoint (no model weights)")
    if not ck.get("done"):
        raise ConfigError(f"{where}: the source run is incomplete (stopped at step {ck.get('step')}, "
                          f"not finished); finish it first")
    return ck


def _describe(fp: dict) -> str:
    model = fp.get("model") or {}
    task = (fp.get("task") or {}).get("name")
    what = f"ops={fp.get('ops')}" if task == "mixture" else f"op={fp.get('op')}"
    return f"p={fp.get('p')}, {what}, model={model.get('name')}, layout={model.get('layout')}"


def check_init(cfg, task) -> dict | None:
    """Check the init group of `cfg` for `task`; the plan {load: names, freeze: names, source:
    checkpoint or None} or None where the run starts from its seeded init, all trainable."""
    if not init_active(cfg):
        return None
    cfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
    v = view(cfg)
    source, load, freeze = (select(v, f"init.{k}") for k in ("from", "load", "freeze"))
    load = [] if load is None else load
    freeze = [] if freeze is None else freeze
    if source is not None and not (isinstance(source, str) and source.strip()):
        raise ConfigError(f"init.from={source!r}: must be a run folder or a checkpoint path, or null")
    if load and source is None:
        raise ConfigError(f"init.load={load}: needs init.from (the run to load them from)")
    if source is not None and not load:
        raise ConfigError(f"init.from={source}: needs init.load (what to take from it, e.g. "
                          f"init.load=[W_E] or [transformer])")
    shapes = _shapes(cfg, task)
    names = list(shapes)
    plan = {"load": resolve(load, names, "init.load"), "freeze": resolve(freeze, names, "init.freeze"),
            "source": None, "names": names}
    if plan["freeze"] == names:
        raise ConfigError(f"init.freeze={list(freeze)}: freezes every parameter of the model, so "
                          f"nothing is left to train (freeze a part, e.g. init.freeze=[W_E])")
    if source is None:
        return plan
    ck = read_source(source)
    here = {"p": cfg.p, "op": cfg.get("op"), "ops": cfg.get("ops"),
            "model": {"name": cfg.model.name, "layout": cfg.model.layout},
            "task": {"name": cfg.task.name}}
    for name in plan["load"]:
        w = ck["model"].get(name)
        if w is None:
            raise ConfigError(f"init.from={source}: the source has no parameter {name} (another "
                              f"architecture: {_describe(ck.get('fingerprint') or {})})")
        if not isinstance(w, torch.Tensor):
            raise ConfigError(f"init.from={source}: {name} there is a {type(w).__name__}, not a "
                              f"tensor (not a checkpoint this project wrote)")
        if tuple(w.shape) != shapes[name]:
            raise ConfigError(
                f"init.from={source}: {name} is {tuple(w.shape)} there but {shapes[name]} here "
                f"(source {_describe(ck.get('fingerprint') or {})}; this run {_describe(here)})")
    plan["source"] = ck
    return plan


def apply(model, plan: dict | None) -> None:
    """Copy the planned parameters of the source into `model` (a single run's, before training)."""
    if not plan or plan["source"] is None:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in plan["load"]:
            params[name].copy_(plan["source"]["model"][name])


def module(plan: dict, names: list[str]) -> str:
    """A short label of what the run took and froze, for tables: embedding, transformer, random
    frozen embedding, or the names."""
    load, freeze = set(plan["load"]), set(plan["freeze"])
    for label in ("embed", "transformer"):
        group = set(GROUPS[label](names))
        if plan["source"] is not None and load == freeze == group:
            return "embedding" if label == "embed" else "transformer"
    if plan["source"] is None and freeze == set(GROUPS["embed"](names)):
        return "random frozen embedding"
    return f"load {','.join(plan['load']) or '-'}; freeze {','.join(plan['freeze']) or '-'}"


def content_hash(ck: dict, names: list[str]) -> str:
    """sha256 of the tensors `names` of the checkpoint `ck` (name, dtype, shape, bytes): which
    weights a run took, whatever became of the folder they came from."""
    h = hashlib.sha256()
    for name in names:
        w = ck["model"][name].detach().cpu().contiguous()
        h.update(f"{name}|{w.dtype}|{tuple(w.shape)}|".encode())
        h.update(w.view(torch.uint8).numpy().tobytes() if w.numel() else b"")
    return h.hexdigest()


def record(cfg, plan: dict | None) -> dict:
    """What a run's summary says of its start (nothing for a plain seeded run): the source by
    path, by content (`init_source_step`, its checkpoint's step; `init_source_hash` of the
    tensors loaded) and its verdict then. A run keeps the record of its start in its checkpoint
    (grok.runs.Run.provenance): a source continued later changes neither its weights nor this."""
    if not plan:
        return {}
    ck, source = plan["source"], cfg.init["from"]
    out = {"init_module": module(plan, plan["names"]), "init_load": plan["load"],
           "init_freeze": plan["freeze"],
           "init_from": None if source is None else str(checkpoint_path(source).resolve())}
    if ck is not None:
        s, fp = ck.get("summary") or {}, ck.get("fingerprint") or {}
        task = (fp.get("task") or {}).get("name")
        out.update(init_source_step=ck.get("step"), init_source_hash=content_hash(ck, plan["load"]),
                   init_source_verdict=s.get("verdict"), init_source_grok_step=s.get("grok_step"),
                   init_source_op=s.get("mixture") if task == "mixture" else s.get("op", fp.get("op")),
                   init_source_frac=fp.get("frac"), init_source_seed=fp.get("seed"))
    return out
