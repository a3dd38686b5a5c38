"""Offline W&B runs read back exactly what was logged, across wandb-core's on-disk format."""

import math
import pathlib

import pytest
import wandb

from grok.wandb_offline import (
    BLOCK_SIZE,
    find_run_files,
    read_records,
    read_run,
    wait_until_finished,
)

CONFIG = {"p": 59, "model": {"d_model": 64}, "op": "x+y"}


@pytest.fixture(scope="module", autouse=True)
def offline_wandb(tmp_path_factory):
    """Keep wandb quiet and off the network, and out of the home directory."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_MODE", "offline")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(home))
        yield


def log_run(root, steps, **init_kwargs) -> str:
    """Log (step, dict) pairs in one offline run; returns its id once its file is complete."""
    with wandb.init(dir=root, mode="offline", **init_kwargs) as run:
        for step, values in steps:
            run.log(values, step=step)
    wait_until_finished(next(pathlib.Path(root).rglob(f"run-{run.id}.wandb")))
    return run.id


def assert_same(got, want):
    """Floats must match bit for bit, not just compare equal."""
    if isinstance(want, float):
        assert type(got) is float and got.hex() == want.hex(), (got, want)
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    else:
        assert type(got) is type(want) and got == want, (got, want)


def test_read_run_returns_logged_values_exactly(tmp_path):
    steps = [
        (0, {"loss": 0.1 + 0.2, "acc": 1 / 3, "count": 7, "hist": [0.1, 2, 1e-300],
             "train/loss": 2.5e-8}),
        (0, {"extra": math.pi}),  # second log() at the same step joins the same row
        (50, {"loss": math.pi * 1e10, "train/loss": 5e-324, "nested": {"x": 0.7}}),
        (100, {"loss": -1 / 7, "count": -3, "hist": [], "flag": True, "name": "é"}),
    ]
    with wandb.init(project="t", group="g1", dir=tmp_path, mode="offline", config=CONFIG) as run:
        for step, values in steps:
            run.log(values, step=step)
        run.log({"one": 1.0}, step=101)
        run.config.update({"lr": 1e-3})
        run_id = run.id

    (path,) = find_run_files(tmp_path)
    wait_until_finished(path)
    got = read_run(path)

    assert (got["run_id"], got["group"], got["project"]) == (run_id, "g1", "t")
    assert got["config"] == {**CONFIG, "lr": 1e-3}
    assert got["config"]["model"]["d_model"] == 64
    expected = [
        {"_step": 0, "loss": 0.1 + 0.2, "acc": 1 / 3, "count": 7, "hist": [0.1, 2, 1e-300],
         "train/loss": 2.5e-8, "extra": math.pi},
        {"_step": 50, "loss": math.pi * 1e10, "train/loss": 5e-324, "nested/x": 0.7},
        {"_step": 100, "loss": -1 / 7, "count": -3, "hist": [], "flag": True, "name": "é"},
    ]
    assert [row["_step"] for row in got["history"]] == [0, 50, 100, 101]
    for row, want in zip(got["history"], expected):
        assert row.keys() == want.keys()
        for key in want:
            assert_same(row[key], want[key])
    # wandb-core re-encodes JSON and writes integral floats without a fraction.
    assert got["history"][3] == {"_step": 101, "one": 1}
    assert type(got["history"][3]["one"]) is int
    assert_same(got["summary"]["loss"], -1 / 7)
    assert got["summary"]["_step"] == 101
    assert not any(key.startswith(("_wandb", "_runtime", "_timestamp")) for key in got["summary"])


def test_two_runs_in_one_process_land_in_separate_files(tmp_path):
    first = log_run(tmp_path, [(0, {"loss": 1.5})], project="t", group="a", config={"p": 59})
    second = log_run(tmp_path, [(0, {"loss": 2.5}), (1, {"loss": 0.25})], project="t", group="b",
                     config={"p": 97})

    runs = {run["run_id"]: run for run in map(read_run, find_run_files(tmp_path))}
    assert runs.keys() == {first, second}
    assert (runs[first]["group"], runs[first]["config"]) == ("a", {"p": 59})
    assert runs[first]["history"] == [{"_step": 0, "loss": 1.5}]
    assert (runs[second]["group"], runs[second]["config"]) == ("b", {"p": 97})
    assert runs[second]["history"] == [{"_step": 0, "loss": 2.5}, {"_step": 1, "loss": 0.25}]


@pytest.fixture(scope="module")
def multi_block_run(tmp_path_factory):
    """A run whose history records each span several 32 KiB blocks (FIRST/MIDDLE/LAST chunks)."""
    root = tmp_path_factory.mktemp("big")
    steps = [(i, {"loss": 1 / (i + 3), "w": [i + k / 3 for k in range(3000)]}) for i in range(10)]
    log_run(root, steps, project="t", group="big", config=CONFIG)
    (path,) = find_run_files(root)
    full = read_run(path)
    assert len(full["history"]) == 10 and full["history"][9]["w"][2999] == 9 + 2999 / 3
    assert path.stat().st_size > 3 * BLOCK_SIZE
    return path, full


def test_truncated_tail_returns_the_prefix(multi_block_run, tmp_path):
    path, full = multi_block_run
    data = path.read_bytes()

    def history_after_cut(cut):
        copy = tmp_path / "run-cut.wandb"
        copy.write_bytes(data[:cut])
        got = read_run(copy)
        assert got["config"] in ({}, full["config"])
        assert got["history"] == full["history"][: len(got["history"])]
        return got["history"]

    last_block = (len(data) - 1) // BLOCK_SIZE * BLOCK_SIZE
    history_after_cut((last_block + len(data)) // 2)
    for cut in range(last_block, len(data), 509):  # torn chunk headers and payloads alike
        history_after_cut(cut)
    row_counts = [len(history_after_cut(cut)) for cut in range(7, len(data), 16381)]
    assert row_counts == sorted(row_counts)
    assert 0 < len(history_after_cut(len(data) // 2)) < len(full["history"])


def test_corrupt_block_is_skipped_not_fatal(multi_block_run, tmp_path):
    path, full = multi_block_run
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # lands in some history record's payload
    copy = tmp_path / "run-corrupt.wandb"
    copy.write_bytes(bytes(data))

    got = read_run(copy)
    assert got["config"] == full["config"]
    assert all(row in full["history"] for row in got["history"])
    assert 0 < len(got["history"]) < len(full["history"])
    assert got["history"][-1] == full["history"][-1]  # reading resumes after the damaged block
    assert sum(1 for _ in read_records(copy)) < sum(1 for _ in read_records(path))
