"""A basic and a packed sweep write what the stored reference records hold (tests/fixtures/records,
made by tests/fixtures/make_records.py before issue 18's restructuring): a change that should not
alter what a run computes or records is shown not to. Per run folder: the same folder name,
metrics.jsonl byte for byte, summary.json byte for byte but for the timings' values,
config.yaml but for the keys the issue adds, checkpoint.pt's tensors equal (and its other
entries, less timings and the random W&B id)."""

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_same_run, launch, read_metrics

from grok.verdict import phase

FIXTURES = Path(__file__).resolve().parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_records", FIXTURES / "make_records.py")
make_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_records)

# Keys a config may gain without changing its run (issue 18): dropped from config.yaml and the
# checkpoint's fingerprint before comparing. Extend here, in this one place.
ADDED_CONFIG_KEYS = ("optimized_metric", "model._target_", "optimizer._target_",
                     # how the curves are read (phases): new keys, and `criterion` (held ->
                     # held_median), identity.NOT_IDENTITY; the stored folders still resume (below)
                     "grok.criterion", "grok.onset", "grok.window")
# What the phases add to a summary, and the criterion whose name they changed (held ->
# held_median): dropped and masked; the verdict and its steps are still compared as they were.
ADDED_SUMMARY_KEYS = ("onset_step", "phase", "spikes", "lowest_test_after_grok")
TIMINGS = {"wall_time_s", "steps_per_s"}          # summary.json (and the checkpoint's summary)
CHECKPOINT_VOLATILE = {"elapsed", "wandb_id"}     # wall time so far; a random id per run


def without_added_keys(cfg: dict) -> dict:
    for key in ADDED_CONFIG_KEYS:
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return cfg


def unrooted(x, root: Path):
    """`x` with the absolute path of the folder it was made in written as <root>."""
    return json.loads(json.dumps(x).replace(str(root), "<root>"))


def same(a, b, where: str) -> None:
    """Nested containers equal, tensors bit for bit (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a.keys() ^ b.keys())}"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def summary(run: Path, root: Path) -> str:
    """summary.json's text, its timings' values and the folder it was made in masked."""
    text = (run / "summary.json").read_text().replace(str(root), "<root>")
    text = re.sub(rf'\n  "(?:{"|".join(ADDED_SUMMARY_KEYS)})": [^\n]*', "", text)
    text = re.sub(r'("criterion": )"[^"\n]*"', r'\1"<criterion>"', text)
    return re.sub(rf'("(?:{"|".join(sorted(TIMINGS))})": )[^,\n}}]+', r"\1<timing>", text)


def config(run: Path, root: Path) -> dict:
    return unrooted(without_added_keys(yaml.safe_load((run / "config.yaml").read_text())), root)


def checkpoint(run: Path) -> dict:
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    for key in CHECKPOINT_VOLATILE:
        ck.pop(key)
    if "summary" in ck:
        ck["summary"] = {k: v for k, v in ck["summary"].items()
                         if k not in {*TIMINGS, *ADDED_SUMMARY_KEYS, "criterion"}}
    ck["fingerprint"] = without_added_keys(ck["fingerprint"])
    return ck


def assert_same_record(reference: Path, run: Path, root: Path) -> None:
    assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes(), \
        f"{run.name}: metrics.jsonl"
    assert summary(run, root) == summary(reference, root), f"{run.name}: summary.json"
    assert config(run, root) == config(reference, root), f"{run.name}: config.yaml"
    same(checkpoint(reference), checkpoint(run), f"{run.name}: checkpoint.pt")


@pytest.mark.parametrize("name", sorted(make_records.SWEEPS))
def test_a_sweep_writes_the_stored_reference_records(name, tmp_path):
    references = make_records.jobs(make_records.RECORDS / name)
    assert len(references) == 4
    sweep_dir = make_records.run_sweep(name, tmp_path)
    runs = make_records.jobs(sweep_dir)
    assert [r.name for r in runs] == [r.name for r in references]  # folders named by identity
    for reference, run in zip(references, runs):
        s = json.loads((run / "summary.json").read_text())
        assert s["status"] == "complete"
        assert {k: s[k] for k in ADDED_SUMMARY_KEYS} == phase(read_metrics(run))  # today's reading
        assert s["criterion"] == "held_median(test_acc>=0.99, window=2000)"
        assert_same_record(reference, run, tmp_path)


def test_the_comparison_sees_a_changed_weight_a_metric_and_a_config_key(tmp_path):
    """The comparison is not vacuous: one flipped bit of a weight, a changed metric or config
    value each fail it; a key of ADDED_CONFIG_KEYS and a timing do not."""
    reference = make_records.jobs(make_records.RECORDS / "basic")[0]
    run = tmp_path / reference.name
    run.mkdir()
    for f in make_records.KEPT:
        (run / f).write_bytes((reference / f).read_bytes())
    text = (run / "summary.json").read_text()
    (run / "summary.json").write_text(re.sub(r'"wall_time_s": [^,]+', '"wall_time_s": 1e9', text))
    assert (run / "summary.json").read_text() != text
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["optimized_metric"] = "best_test_acc"
    cfg["model"]["_target_"] = "grok.models.Some"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert_same_record(reference, run, tmp_path)

    def broken(f, edit):
        before = (reference / f).read_bytes()
        edit(run / f)
        assert (run / f).read_bytes() != before
        with pytest.raises(AssertionError):
            assert_same_record(reference, run, tmp_path)
        (run / f).write_bytes(before)

    def replace(old, new):
        return lambda p: p.write_text(p.read_text().replace(old, new, 1))

    def flip_a_weight_bit(path):
        ck = torch.load(path, weights_only=True)
        w = ck["model"]["W_E"].view(-1)
        w[0] = torch.nextafter(w[0], torch.tensor(math.inf))
        torch.save(ck, path)

    broken("checkpoint.pt", flip_a_weight_bit)
    broken("metrics.jsonl", replace('"step": 10,', '"step": 11,'))
    broken("config.yaml", replace("lr: 0.003", "lr: 0.004"))
    broken("summary.json", replace('"n_train": ', '"n_train": 1'))


def test_a_stored_run_folder_resumes_to_a_longer_budget(tmp_path):
    """Issue 18 item 7: a run folder written by the layout of the stored records (its config.yaml,
    its checkpoint's fingerprint) is continued by today's code, not refused (`RunRefused ...
    differs in <key>`), and continues as if it had never stopped: a fresh run of the longer
    budget writes the same metrics and weights."""
    reference = make_records.jobs(make_records.RECORDS / "basic")[0]
    assert reference.name.startswith("frac=0.5,") and ",seed=0," in reference.name
    run = tmp_path / "copy"
    run.mkdir()
    for f in make_records.KEPT:
        (run / f).write_bytes((reference / f).read_bytes())
    args = [o for o in make_records.SMALL if not o.startswith("train.steps=")]
    args += ["frac=0.5", "seed=0", "train.steps=80"]
    r = launch([*args, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RunRefused" not in r.stderr and "differs in" not in r.stderr
    s = json.loads((run / "summary.json").read_text())
    assert (s["status"], s["steps"], s["resumed_from"]) == ("complete", 80, 60)
    before, after = read_metrics(reference), read_metrics(run)
    assert [m["step"] for m in after] == list(range(0, 90, 10))
    assert after[:6] == before[:6]  # steps 0..50 kept as they were
    fresh = tmp_path / "fresh"
    r = launch([*args, f"hydra.run.dir={fresh}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "metrics.jsonl").read_bytes() == (fresh / "metrics.jsonl").read_bytes()
    assert_same_run(fresh, run)


def test_a_stored_sweep_relaunched_with_a_longer_budget_resumes_every_run(tmp_path):
    """The same, as the sweep: relaunched with its sweep_id into a copy of its folder, every job
    finds its run by its folder name (its identity) and continues it; no new folder."""
    references = make_records.jobs(make_records.RECORDS / "basic")
    sweep = tmp_path / "sweep"
    for reference in references:
        (sweep / reference.name).mkdir(parents=True)
        for f in make_records.KEPT:
            (sweep / reference.name / f).write_bytes((reference / f).read_bytes())
    args = [o for o in make_records.SWEEPS["basic"] if not o.startswith("train.steps=")]
    r = launch(["-m", *args, "train.steps=80", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [p.name for p in references]
    for reference in references:
        run = sweep / reference.name
        s = json.loads((run / "summary.json").read_text())
        assert (s["status"], s["steps"], s["resumed_from"]) == ("complete", 80, 60), run.name
        assert read_metrics(run)[:6] == read_metrics(reference)[:6], run.name
