"""A run's checkpoint: everything its training depends on, in its own folder.

Each run of a pack keeps its own `checkpoint.pt` (its weights and optimizer state as a single run
has them, step, metrics so far, W&B id and a fingerprint of its config), so a pack can be formed
again from its runs' folders after a kill, a requeue or a relaunch with other pack sizes. Loading
never unpickles code (`weights_only=True`): a checkpoint holds tensors and plain containers only.

With `train.snapshot_every=N` a run keeps its weights every N steps (step 0, the initialisation,
included) and at its last step, one small file per kept step beside the rolling resume
checkpoint: `snapshots/step_0001200.pt` holding {"step": 1200, "model": state dict}. Weights are
stored as trained (float32 by default), without optimizer state. Each file is written
atomically; a resumed run first removes snapshots past its checkpoint (a killed run's, which it
then writes again, bit-identical) so a folder never holds two versions of a step, nor a snapshot
a run trained at once would lack.
"""

import io
import re
from pathlib import Path

import torch
from omegaconf import DictConfig

from grok.record.files import atomic_write
from grok.record.identity import changes, fingerprint
from grok.record.lock import RunRefused

FORMAT = 2
SNAPSHOTS = "snapshots"
_NAME = re.compile(r"step_(\d+)\.pt")


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
    changed = changes(ck["fingerprint"], fingerprint(cfg))
    if changed:
        raise refusal(Path(path).parent, changed)
    return ck


def snapshot_path(run_dir, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step_{step:07d}.pt"


def snapshot_steps(run_dir) -> list[int]:
    """Steps with a snapshot in the folder, ascending."""
    folder = Path(run_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))


def save_snapshot(run_dir, step: int, model: torch.nn.Module) -> None:
    """The weights of `model` (a single run's view) at `step`, as trained; copied out first, so a
    view into a pack does not drag the whole pack's storage into the file."""
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(exist_ok=True)
    write(path, {"step": step, "model": {k: v.detach().cpu().clone()
                                                    for k, v in model.state_dict().items()}})


def drop_snapshots_after(run_dir, step: int, also_at: bool = False) -> list[int]:
    """Remove snapshots past `step` (and at it, with `also_at`); the steps removed."""
    gone = [s for s in snapshot_steps(run_dir) if s > step or (also_at and s == step)]
    for s in gone:
        snapshot_path(run_dir, s).unlink(missing_ok=True)
    return gone
