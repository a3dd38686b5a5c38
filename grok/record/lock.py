"""Who may write in a run folder: one process at a time.

`FolderLock` holds an OS file lock (flock) on `<folder>/.lock`, which the kernel releases when
the process dies, however it dies; the file says which process holds it.
"""

import fcntl
import os
import socket
from pathlib import Path

LOCK = ".lock"


class FolderError(RuntimeError):
    """This launch may not use the run folder: nothing was written there, and no failure is
    recorded there (it is another run's)."""


class FolderInUse(FolderError):
    pass


class RunRefused(FolderError):
    pass


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
