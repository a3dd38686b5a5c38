"""Run folders: which folder a sweep job uses (its identity), and who may write in it (a lock).

A sweep job's folder is named by what makes the run: its overrides, sorted and normalised, less
those that do not change its results (`RESUMABLE_CHANGES`: sweep id, logger, budget, device,
threads, ...). So a sweep relaunched with the same `sweep_id`, its values in another order or
with more values, finds each run it has already trained in the same folder, whatever the job's
number; and a longer `train.steps` continues the same runs. Hydra asks for the name through the
resolver `${grok.job_dir:${hydra.overrides.task}}` (conf/config.yaml: `hydra.sweep.subdir`).

One process at a time works in a run folder: `FolderLock` holds an OS file lock (flock) on
`<folder>/.lock`, which the kernel releases when the process dies, however it dies; the file
says which process holds it.
"""

import errno
import fcntl
import functools
import hashlib
import os
import re
import socket
from pathlib import Path

from omegaconf import OmegaConf

# Keys that may change between a checkpoint and its resume without changing the run's results.
RESUMABLE_CHANGES = ("sweep_id", "logger", "train.steps", "train.early_stop_after", "train.threads",
                     "train.device", "train.chunk", "train.max_memory_gb", "train.snapshot_every")
LOCK = ".lock"
DEFAULT_NAME = "default"   # a sweep job without overrides of its own
_SAFE = re.compile(r"[A-Za-z0-9_.,=+-]+")
MAX_NAME = 160


class FolderError(RuntimeError):
    """This launch may not use the run folder: nothing was written there, and no failure is
    recorded there (it is another run's)."""


class FolderInUse(FolderError):
    pass


class RunRefused(FolderError):
    pass


def identity_key(key: str) -> bool:
    """Does an override of `key` change what a run computes (and so its folder)?"""
    return not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)


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
    name = ",".join(sorted(items.values())) or DEFAULT_NAME
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


def holder(folder) -> str | None:
    """Who holds the folder's lock ("pid N on HOST"), or None if no process does. Reads only."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    finally:
        os.close(fd)  # (releases the shared lock, if taken)
    return None


def _read_holder(fd) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


class FolderLock:
    """An exclusive lock on a run folder for as long as this process works in it. Raises
    FolderInUse (naming the folder and the holder's pid) if another process, or another run of
    this one, holds it."""

    held: set[str] = set()  # folders locked by this process

    def __init__(self, folder):
        self.dir = Path(folder)
        key = str(self.dir.resolve())
        if key in FolderLock.held:
            raise FolderInUse(f"{self.dir} is in use by another run of this process "
                              f"(pid {os.getpid()}): two jobs of one launch in one folder")
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read_holder(fd)
            os.close(fd)
            raise FolderInUse(f"{self.dir} is in use by {who}: another launch is running this "
                              f"run; wait for it to end or use another folder") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the note (a full disk is reported by the record writes)
        self.fd, self.key = fd, key
        FolderLock.held.add(key)

    def release(self) -> None:
        if self.fd is not None:
            FolderLock.held.discard(self.key)
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def holds(folder) -> bool:
    """Does this process hold the folder's lock?"""
    return str(Path(folder).resolve()) in FolderLock.held


def remove_leftovers(folder) -> list[Path]:
    """Delete the temporary files that killed atomic writes left (`.<name>.<random>.tmp`, see
    grok.tracking.atomic_write) in the folder and its `.hydra/`. Call it holding the lock."""
    gone = []
    for d in (Path(folder), Path(folder) / ".hydra"):
        for p in d.glob(".*.tmp"):
            if re.fullmatch(r"\..+\.[A-Za-z0-9_]+\.tmp", p.name) and p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


class DiskFull(OSError):
    """A record or checkpoint could not be written for want of space: one line, with the path."""

    def __init__(self, path):
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}")
        self.path = str(path)

    def __str__(self) -> str:
        return f"{self.path}: no space left on device (nothing older was overwritten)"
