"""A run's identity: which folder a sweep job uses, and whether a folder holds a run of a config.

A sweep job's folder is named by what makes the run: its overrides, sorted and normalised, less
those that do not change its results (`RESUMABLE_CHANGES`: sweep id, logger, budget, device,
threads, ...). So a sweep relaunched with the same `sweep_id`, its values in another order or
with more values, finds each run it has already trained in the same folder, whatever the job's
number; and a longer `train.steps` continues the same runs. Hydra asks for the name through the
resolver `${grok.job_dir:${hydra.overrides.task}}` (conf/config.yaml: `hydra.sweep.subdir`).

A folder's run keeps its config's `fingerprint`; a relaunch resumes it only where `changes`
finds none. Keys that do not change training never count (`RESUMABLE_CHANGES`, `NOT_IDENTITY`),
and a key added to the configs after a folder was written (`ADDED_LATER`) counts only where the
folder's fingerprint has it, so a new key never turns every existing folder away. A folder
written before `optimizer._target_` compares as the `_target_` its `optimizer.base` (or name)
meant, without `base`, the key `_target_` replaced.

One run, however it was spelled (`run_key`): `op=x+y`, `op=y+x` and `op=x+1y` make three folders
(folder names keep the spelling, so existing sweeps still resume) but train one run. A launch
refuses a sweep with two jobs of one key (hydra_plugins/grok_launchers/_batch.py), and analysis
counts a run once by its key wherever it finds it (analysis/collate.py).
"""

import copy
import functools
import hashlib
import json
import re

from omegaconf import DictConfig, OmegaConf

from grok.config import TARGET_BEFORE
from grok.ops import OpError, parse_op

# Keys that may change between a checkpoint and its resume without changing the run's results.
RESUMABLE_CHANGES = ("sweep_id", "logger", "train.steps", "train.early_stop_after", "train.threads",
                     "train.device", "train.chunk", "train.max_memory_gb", "train.snapshot_every")
# Keys that never change what a run computes: what a search sweeper reads of a run, and how the
# verdict reads the curves (grok/verdict.py) beyond its threshold and delay ratio: like
# train.early_stop_after, they may time an early stop, never change a step taken. Folders written
# before they existed (criterion `held`, no onset or window) resume.
NOT_IDENTITY = ("optimized_metric", "grok.criterion", "grok.onset", "grok.window")
# Keys the configs gained after run folders were written with them absent, each naming what the
# run did before (the class today's choice builds): absent from a folder's fingerprint, they
# compare equal.
ADDED_LATER = ("model._target_", "optimizer._target_")
DEFAULT_NAME = "default"   # a sweep job without overrides of its own
_SAFE = re.compile(r"[A-Za-z0-9_.,=+-]+")
MAX_NAME = 160


def identity_key(key: str) -> bool:
    """Does an override of `key` change what a run computes (and so its folder)?"""
    return not any(key == k or key.startswith(k + ".") for k in (*RESUMABLE_CHANGES, *NOT_IDENTITY))


def job_dirname(overrides) -> str:
    """The folder name of a sweep job with these (non-hydra) override strings: `key=value` of each
    identity override, values as Hydra parses them (`frac=.50` is `frac=0.5`), sorted, joined by
    commas, e.g. `frac=0.5,op=x2+y2,task=poly`. A name that would hold characters a shell or a
    path treats specially (`x/y`, `'(x+y)^3'`, lists) or be longer than MAX_NAME characters is
    made safe and ends in a hash of the full name, so no two identities share a folder."""
    from hydra.core.override_parser.types import OverrideType

    items = {}  # by key: a later override of a key replaces an earlier one, as in Hydra
    for o in _parser().parse_overrides([str(x) for x in overrides]):
        if not identity_key(o.key_or_group):
            continue
        if o.type == OverrideType.DEL:
            items[o.key_or_group] = f"~{o.key_or_group}" + (
                "" if o.value() is None else f"={o.get_value_element_as_str()}")
        else:
            items[o.key_or_group] = f"{o.key_or_group}={o.get_value_element_as_str()}"
    return safe_dirname(items.values())


def safe_dirname(items) -> str:
    """The folder name of identity items (`key=value` strings): sorted, joined by commas, made
    safe as `job_dirname` says. grok.api names the folder of a config it is handed this way."""
    name = ",".join(sorted(items)) or DEFAULT_NAME
    if _SAFE.fullmatch(name) and len(name) <= MAX_NAME and name[0] not in ".-":
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", name)[:MAX_NAME - 12].strip("_.,-")
    return f"{readable}_{digest}" if readable else digest


@functools.cache
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


if not OmegaConf.has_resolver("grok.job_dir"):
    OmegaConf.register_new_resolver("grok.job_dir", lambda overrides: job_dirname(list(overrides)))


def fingerprint(cfg: DictConfig) -> dict:
    return canonical(OmegaConf.to_container(cfg, resolve=True))


def _pop(c: dict, key: str) -> None:
    *parents, last = key.split(".")
    node = c
    for part in parents:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node.pop(last, None)


def _has(c: dict, key: str) -> bool:
    *parents, last = key.split(".")
    node = c
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return isinstance(node, dict) and last in node


def canonical(c: dict) -> dict:
    """A config as a run's identity: without the keys a run may change and still resume or that
    never change it, and without `task.op` beside a top-level `op` (the op trained; task.op only
    gives its default, and config.yaml shows the op trained there since this version)."""
    if "op" in c and isinstance(c.get("task"), dict):
        c["task"].pop("op", None)
    for key in (*RESUMABLE_CHANGES, *NOT_IDENTITY):
        _pop(c, key)
    if isinstance(c.get("init"), dict) and not init_active(c):
        c.pop("init")  # the seeded init (init=none): the same run as before the init group existed
    return c


def changes(stored: dict, current: dict) -> list[str]:
    """Dotted keys where the run a folder holds (its fingerprint, `stored`) and the run a config
    asks for (`current`) differ; none: the same run. A key of ADDED_LATER that the folder's
    fingerprint lacks is not compared: the folder was written before the key existed."""
    stored, current = canonical(copy.deepcopy(stored)), canonical(copy.deepcopy(current))
    _optimizer_target(stored)
    _optimizer_target(current)
    for key in ADDED_LATER:
        if not _has(stored, key):
            _pop(current, key)
    return diff(stored, current)


def _optimizer_target(c: dict) -> None:
    """A config written before `optimizer._target_` (grok.optim) with the `_target_` its `base`
    (a Grokfast or ⊥Grad optimizer's update) or else its name meant, and `base` dropped."""
    o = c.get("optimizer")
    if not isinstance(o, dict) or "_target_" in o:
        return
    old = o.get("base", o.get("name"))
    if isinstance(old, str) and old in TARGET_BEFORE:  # else: compared as ADDED_LATER says
        o["_target_"] = TARGET_BEFORE[old]
        o.pop("base", None)


def diff(a, b, prefix="") -> list[str]:
    """Dotted keys where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def init_active(cfg) -> bool:
    """Does this config start from anything but its seeded init, or freeze anything? (grok.init)"""
    i = cfg.get("init") if not OmegaConf.is_config(cfg) else OmegaConf.to_container(
        cfg, resolve=False).get("init")  # unresolved: `???` counts (and is refused by grok.init)
    return isinstance(i, dict) and bool(i.get("from") or i.get("load") or i.get("freeze"))


def run_key(config: dict) -> str:
    """A run's identity as one string, from its resolved config (`fingerprint`, or a run folder's
    config.yaml): `canonical`, with each op (`op`, a mixture's `ops` in their order) named by
    what it computes at the run's p (`op_key`), so two spellings of one op are one run."""
    c = canonical(copy.deepcopy(config))
    _optimizer_target(c)
    p = c.get("p")
    if isinstance(c.get("op"), (str, int)) and not isinstance(c.get("op"), bool):
        c["op"] = op_key(str(c["op"]), p)
    if isinstance(c.get("ops"), list):
        c["ops"] = [op_key(str(o), p) if isinstance(o, (str, int)) else o for o in c["ops"]]
    return json.dumps(c, sort_keys=True, default=repr)


def op_key(text: str, p) -> str:
    """What an op computes at p: a hash of its label table (`x+y` and `x+24y` are one op mod 23),
    else its canonical form, else (no op) its text."""
    try:
        op = parse_op(text)
    except OpError:
        return text
    return _table_key(op.canonical, p) if isinstance(p, int) and not isinstance(p, bool) else op.canonical


@functools.lru_cache(maxsize=256)
def _table_key(canonical_op: str, p: int) -> str:
    op = parse_op(canonical_op)
    try:
        x, y, z = op.labels(p)
    except OpError:  # p out of range, composite for division: not a run; its spelling then
        return canonical_op
    digest = hashlib.sha1(b"".join(a.tobytes() for a in (x, y, z))).hexdigest()[:16]
    return f"labels:{digest}"
