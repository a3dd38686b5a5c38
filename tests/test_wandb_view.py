"""A run as W&B shows it, read back from the offline run file (what `wandb sync` uploads): name,
tags with the verdict, metrics against `step` with max/min summaries, histograms for list
measures, the trained op in the config, the run's files and the checkpoint artifact."""

import json

import pytest
from conftest import TINY, compose_cfg, read_metrics

from grok.train import run
from grok.wandb_offline import find_run_files, read_run, wait_until_finished
from grok.wandb_view import record_name

pytestmark = pytest.mark.usefixtures("one_thread")


def offline_run(run_dir) -> dict:
    (path,) = find_run_files(run_dir)
    wait_until_finished(path)
    return read_run(path)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    d = tmp_path_factory.mktemp("wb")
    run(compose_cfg([*TINY, "task=poly", "op=x2+y2", "frac=0.5", "seed=1", "logger.log_checkpoint=true",
                     "measures.full_every=2"]), d)
    return d, offline_run(d), read_metrics(d), json.loads((d / "summary.json").read_text())


def test_name_and_tags_say_what_the_run_is(logged):
    _, wb, _, summary = logged
    assert wb["name"] == "x^2+y^2 p23 f0.5 s1"
    assert wb["tags"] == ["poly", "sum of powers", "model:nanda", "opt:adamw", summary["verdict"]]


def test_the_logged_config_has_the_trained_op(logged):
    _, wb, _, _ = logged
    assert wb["config"]["op"] == "x2+y2" and wb["config"]["task"]["op"] == "x2+y2"  # not poly's default


def test_every_metric_against_step_and_summaries_keep_the_best(logged):
    _, wb, rows, summary = logged
    assert wb["metrics"]["step"]["step_metric"] == ""
    assert wb["metrics"]["*"]["step_metric"] == "step"
    assert set(wb["metrics"]["test/acc"]["summary"]) == {"max", "last"}
    assert set(wb["metrics"]["test/loss"]["summary"]) == {"min", "last"}
    assert wb["summary"]["test/acc"]["max"] == max(r["test_acc"] for r in rows)
    assert wb["summary"]["test/acc"]["last"] == rows[-1]["test_acc"]
    assert wb["summary"]["grok_step"] == summary["grok_step"]
    assert wb["summary"]["test/best_acc"] == summary["best_test_acc"]
    assert [h["step"] for h in wb["history"]] == [r["step"] for r in rows]


def test_list_measures_are_histograms(logged):
    _, wb, rows, _ = logged
    full = [({record_name(k): v for k, v in h.items()}, r)
            for h, r in zip(wb["history"], rows) if "neuron_freq" in r]
    assert len(full) >= 3
    for h, r in full:
        # (wandb-core stores a histogram as its keys _type, values and bins under the name)
        assert h["fourier_norms_embed/_type"] == "histogram"  # a bar per Fourier basis vector
        assert h["fourier_norms_embed/values"] == r["fourier_norms_embed"]
        assert h["fourier_norms_embed/bins"] == list(range(24))
        counts = h["neuron_freq/values"]  # neurons per frequency, one bin per integer
        assert h["neuron_freq/_type"] == "histogram" and sum(counts) == len(r["neuron_freq"]) == 64
        lo = min(r["neuron_freq"])
        for freq in set(r["neuron_freq"]):
            assert counts[freq - lo] == r["neuron_freq"].count(freq)
        assert h["neuron_freq_var_frac/_type"] == "histogram"
        assert sum(h["neuron_freq_var_frac/values"]) == 64
        for key, value in r.items():  # everything else as it is in metrics.jsonl
            if not isinstance(value, list) or not value:
                assert h[key] == value, key


def test_files_and_checkpoint_artifact(logged):
    d, wb, _, _ = logged
    assert {"config.yaml", "summary.json", "curves.png"} <= set(wb["files"])
    # the plot is the run figure of `python -m analysis plots` (loss, accuracy, measures: 1500x400)
    (png,) = d.glob("wandb/offline-run-*/files/curves.png")
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1500, 400)
    (art,) = wb["artifacts"]
    assert art["type"] == "model" and art["files"] == ["checkpoint.pt"]


def test_no_artifact_or_plot_unless_asked(tmp_path):
    run(compose_cfg([*TINY, "train.steps=10", "logger.log_plot=false"]), tmp_path)
    wb = offline_run(tmp_path)
    assert wb["artifacts"] == [] and "curves.png" not in wb["files"]
    assert {"config.yaml", "summary.json"} <= set(wb["files"])
    assert wb["name"] == "x+y p23 f0.4 s0" and wb["tags"][:2] == ["add", "elementary"]
