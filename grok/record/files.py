"""A run folder's files, written so that a reader sees the old file or the new one, never half.

Every file is replaced atomically, and a full disk is one clear error that overwrites nothing.
JSON has no NaN or Infinity: a non-finite float (a diverged loss) is written as null, which
pandas reads as NaN; every file is valid JSON (`json.dumps(..., allow_nan=False)`).
"""

import errno
import hashlib
import json
import math
import numbers
import os
import re
import tempfile
from pathlib import Path

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"
LAUNCH_LOG = "launch.log"  # the run's log lines (Hydra's job log, or the pack launcher's)

# Non-finite floats as JSON writers spell them: bare NaN (Python's json), or as strings.
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFull(OSError):
    """A record or checkpoint could not be written for want of space: one line, with the path."""

    def __init__(self, path):
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}")
        self.path = str(path)

    def __str__(self) -> str:
        return f"{self.path}: no space left on device (nothing older was overwritten)"


def atomic_write(path: Path, write) -> None:
    """Write through `write(file)` to a temporary file in the same folder, then rename over
    `path`: a reader (or a resumed run) sees the old file or the new one, never half of one."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise disk_full(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(e, path)
        if full is e:
            raise
        raise full from None


def disk_full(error: BaseException, path) -> BaseException:
    """ENOSPC as one line naming the file (DiskFull); any other error as it is."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) \
            and not isinstance(error, DiskFull):
        return DiskFull(path)
    return error


def remove_leftovers(folder) -> list[Path]:
    """Delete the temporary files that killed atomic writes left (`.<name>.<random>.tmp`, see
    atomic_write) in the folder, its `.hydra/` and its `snapshots/` (a weight snapshot is written
    the same way). Call it holding the lock."""
    gone = []
    for d in (Path(folder), Path(folder) / ".hydra", Path(folder) / "snapshots"):
        for p in d.glob(".*.tmp"):
            if re.fullmatch(r"\..+\.[A-Za-z0-9_]+\.tmp", p.name) and p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def jsonable(value):
    """`value` with every non-finite float replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(value, **kw) -> str:
    """Strict JSON (no NaN, no Infinity: those become null)."""
    return json.dumps(jsonable(value), allow_nan=False, **kw)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def slug(text, limit: int = 60) -> str:
    """`text` (a record's value, a config key, a folder's name) as one plain file-name part:
    letters, digits and `_.,+=-` only, no leading dot, no `..`, at most `limit` characters, and
    ending in a short hash of `text` when anything was changed or cut, so two texts never share a
    name. Every output file name built from data goes through here: a value is never a path."""
    text = str(text)
    safe = re.sub(r"[^A-Za-z0-9_.,+=-]+", "_", text)
    safe = re.sub(r"\.{2,}", "_", safe).strip("_").lstrip(".")
    if safe == text and text and len(text) <= limit:
        return text
    return f"{safe[:limit]}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def file_in(folder, name: str) -> Path:
    """`folder / name`, where `name` is one plain file name (a slug, an extension): a name that
    is empty, holds a path separator or is `.` or `..` is refused (ValueError), so a write never
    leaves the folder it was asked to write to."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r}: not a plain file name (writes stay in {folder})")
    return Path(folder) / name


def number(value):
    """A JSON value as a float where it stands for one ("NaN", "Infinity" too); else as it is."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    return value


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
