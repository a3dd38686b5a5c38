"""Read back what an offline W&B run logged, without a server.

wandb.Api cannot open offline runs and wandb 0.30+ dropped its Python DataStore, so the
run-<id>.wandb transaction log is decoded here. It is written by wandb-core (Go):
core/internal/transactionlog/writer.go (OpenWriter: leveldb.NewWriterExt with CRCAlgoIEEE
and the header wandbStoreVersion) on top of core/pkg/leveldb/record.go, i.e. the LevelDB
log format with a plain, unmasked IEEE crc32 (zlib.crc32) over chunk type + payload.
"""

import json
import pathlib
import struct
import time
import zlib
from collections.abc import Iterator

from wandb.proto import wandb_internal_pb2

# ":W&B", magic 0xBEE1 little-endian, store version 0; a version bump should fail loudly.
FILE_HEADER = b":W&B\xe1\xbe\x00"
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, payload length, chunk type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

# Bookkeeping wandb adds to every step and to the summary; not part of what was logged.
_INTERNAL_KEYS = {"_wandb", "_timestamp", "_runtime"}


def find_run_files(root) -> list[pathlib.Path]:
    """Every transaction log under root; rglob skips the latest-run symlink, so no duplicates."""
    return sorted(pathlib.Path(root).rglob("run-*.wandb"))


def _chunks(path) -> Iterator[tuple[int, bytes] | None]:
    """Chunks in file order; None marks damage, after which the rest of the block is skipped
    (what wandb's own reader does)."""
    with open(path, "rb") as f:
        block = f.read(BLOCK_SIZE)
        if block[: len(FILE_HEADER)] != FILE_HEADER:
            raise ValueError(f"{path}: not a W&B transaction log (header {block[:7]!r})")
        pos = len(FILE_HEADER)
        while block:
            while pos + CHUNK_HEADER.size <= len(block):
                crc, length, kind = CHUNK_HEADER.unpack_from(block, pos)
                start = pos + CHUNK_HEADER.size
                pos = start + length
                if pos > len(block) and len(block) < BLOCK_SIZE:
                    return  # torn write at the tail of a killed run
                intact = pos <= len(block) and zlib.crc32(block[start - 1 : pos]) == crc
                if not intact or kind not in (FULL, FIRST, MIDDLE, LAST):
                    yield None
                    break
                yield kind, block[start:pos]
            block, pos = f.read(BLOCK_SIZE), 0


def read_records(path) -> Iterator[wandb_internal_pb2.Record]:
    """Every intact record; a partial last record (killed run) is dropped silently."""
    parts = None  # payloads of a FIRST..LAST record in progress
    for chunk in _chunks(path):
        if chunk is None:
            parts = None
            continue
        kind, payload = chunk
        if kind == FULL:
            parts = None
            yield wandb_internal_pb2.Record.FromString(payload)
        elif kind == FIRST:
            parts = [payload]
        elif parts is not None:  # MIDDLE/LAST orphaned by damage are dropped
            parts.append(payload)
            if kind == LAST:
                yield wandb_internal_pb2.Record.FromString(b"".join(parts))
                parts = None


def wait_until_finished(path, timeout: float = 30.0) -> None:
    """Block until the run's exit record is on disk.

    In wandb 0.31 wandb.finish() returns before wandb-core closes the log, and the writer
    buffers its last block until then, so a file read right after finish() may hold only the
    7-byte header. The exit record is the last one written, so its presence means complete.
    """
    deadline = time.monotonic() + timeout
    while not any(record.HasField("exit") for record in read_records(path)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout} s")
        time.sleep(0.05)


def _path(item) -> tuple[str, ...]:
    """wandb sets either key or nested_key; nested_key comes from logging nested dicts."""
    return tuple(item.nested_key) or (item.key,)


def _set_nested(target: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _pop_nested(target: dict, path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        target = target.get(key, {})
    target.pop(path[-1], None)


def _apply_config(config: dict, record) -> None:
    for item in record.update:
        if _path(item)[0] != "_wandb":
            _set_nested(config, _path(item), json.loads(item.value_json))
    for item in record.remove:
        _pop_nested(config, _path(item))


def read_run(path) -> dict:
    """Identity (id, group, project, name, tags), config, per-step history, summary, metric
    definitions (`metrics`: name or glob -> {"step_metric", "summary": [...]}), saved files and
    logged artifacts (name, type, the files in them) of one run, as plain Python values.

    History and summary keys are the logged keys with nested dicts joined by "/" (so
    log({"a": {"b": 1}}) and log({"a/b": 1}) read the same). wandb-core already merges the
    log() calls of one step into one history record; rows sharing a step are merged anyway.
    """
    run = {"run_id": "", "group": "", "project": "", "name": "", "tags": [], "config": {},
           "history": [], "summary": {}, "metrics": {}, "files": [], "artifacts": []}
    rows: dict[int, dict] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["run_id"] = record.run.run_id or run["run_id"]
            run["group"] = record.run.run_group or run["group"]
            run["project"] = record.run.project or run["project"]
            run["name"] = record.run.display_name or run["name"]
            run["tags"] = list(record.run.tags)  # the latest run record has the current tags
            _apply_config(run["config"], record.run.config)
        elif kind == "config":
            _apply_config(run["config"], record.config)
        elif kind == "history":
            step = record.history.step.num
            row = rows.setdefault(step, {})
            for item in record.history.item:
                if _path(item)[0] not in _INTERNAL_KEYS:
                    row["/".join(_path(item))] = json.loads(item.value_json)
            row["_step"] = step
        elif kind == "summary":
            for item in record.summary.update:
                if _path(item)[0] not in _INTERNAL_KEYS:
                    run["summary"]["/".join(_path(item))] = json.loads(item.value_json)
            for item in record.summary.remove:
                run["summary"].pop("/".join(_path(item)), None)
        elif kind == "metric":
            m = record.metric
            summary = [op for op in ("min", "max", "mean", "last", "first", "none")
                       if getattr(m.summary, op, False)]
            run["metrics"][m.name or m.glob_name] = {"step_metric": m.step_metric, "summary": summary}
        elif kind == "files":
            run["files"] += [f.path for f in record.files.files if f.path not in run["files"]]
        elif kind == "artifact":
            a = record.artifact
            run["artifacts"].append({"name": a.name, "type": a.type,
                                     "files": [c.path for c in a.manifest.contents]})
    run["history"] = [rows[step] for step in sorted(rows)]
    return run
