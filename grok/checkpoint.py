"""A run's checkpoint: everything its training depends on, in its own folder.

Each run of a pack keeps its own `checkpoint.pt` (its weights and optimizer state as a single run
has them, step, metrics so far, W&B id and a fingerprint of its config), so a pack can be formed
again from its runs' folders after a kill, a requeue or a relaunch with other pack sizes. Loading
never unpickles code (`weights_only=True`): a checkpoint holds tensors and plain containers only.
"""

import io
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from grok import init as init_
from grok.folders import RESUMABLE_CHANGES, RunRefused
from grok.tracking import atomic_write

FORMAT = 2


def fingerprint(cfg: DictConfig) -> dict:
    return canonical(OmegaConf.to_container(cfg, resolve=True))


def canonical(c: dict) -> dict:
    """A config as a run's identity: without the keys a run may change and still resume, and
    without `task.op` beside a top-level `op` (the op trained; task.op only gives its default,
    and config.yaml shows the op trained there since this version)."""
    if "op" in c and isinstance(c.get("task"), dict):
        c["task"].pop("op", None)
    for key in RESUMABLE_CHANGES:
        *parents, last = key.split(".")
        node = c
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    if isinstance(c.get("init"), dict) and not init_.active(c):
        c.pop("init")  # the seeded init (init=none): the same run as before the init group existed
    return c


def diff(a, b, prefix="") -> list[str]:
    """Dotted keys where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class Unreadable(Exception):
    """A file `read` refuses: corrupt, truncated, or holding objects other than tensors and plain
    containers. Its text says why, in one line."""


def read(path):
    """A tensors-only file (a checkpoint, a weight snapshot, an init source) on the CPU. The one
    place a run folder's files are loaded: `weights_only=True`, so nothing is ever unpickled."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or holding more than tensors
        raise Unreadable(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None


def write(path: Path, obj) -> None:
    """torch.save, atomically. Serialised in memory first: the file is then written by plain
    writes, whose errors (a full disk) say what they are, where torch's own writer is cryptic."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def save(path: Path, state: dict) -> None:
    write(path, {"format": FORMAT, **state})


def refusal(folder, changed: list[str]) -> RunRefused:
    return RunRefused(f"{folder} holds a run of another config (differs in {', '.join(changed)}); "
                      f"refused, nothing written there: use another folder")


def load(path: Path, cfg: DictConfig) -> dict | None:
    """The checkpoint at `path` if there is one, after checking it was made by this config."""
    if not path.exists():
        return None
    try:
        ck = read(path)
    except Unreadable as e:
        raise RuntimeError(f"{path} is not a readable checkpoint ({e}); move it away to start this "
                           f"run again") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise RuntimeError(f"{path} is not a checkpoint this version can resume; use a new run folder")
    changed = diff(canonical(ck["fingerprint"]), fingerprint(cfg))
    if changed:
        raise refusal(Path(path).parent, changed)
    return ck
