"""What a user sees while runs train (grok.progress, docs/progress.md): the pure pieces (ETA, the
pack's line, the sweep's line), a sweep's counts without a terminal, and a real terminal (tmux)."""

import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT, TINY, launch
from hydra.core.utils import JobReturn, JobStatus

from grok.progress import SweepProgress, duration, eta_s, pack_line, summary_reading, sweep_line
from hydra_plugins.grok_launchers._batch import job_outcome

# a log line as Hydra's job logging writes it; a tqdm bar's text
LOG_LINE = re.compile(r"\]\[(grok|sweep|hydra)[^\]]*\]\[(INFO|WARNING|ERROR)\] - ")
BAR = re.compile(r"it/s|s/it|\d+%\|")


# -- pure functions ---------------------------------------------------------------------------


def test_duration_reads_at_the_precision_of_an_estimate():
    assert [duration(s) for s in (0, 44.6, 130, 3600 + 180 + 59, 2 * 86400 + 4 * 3600 + 5)] == \
        ["0s", "45s", "2m10s", "1h03m", "2d04h"]
    assert duration(-3) == "0s"


def test_pack_line_counts_states_training_first():
    assert pack_line(["grokked", "training", "failed", "training", "grokked", "training"]) == \
        "6 runs: 3 training, 2 grokked, 1 failed"
    assert pack_line(["grokked"]) == "1 run: 1 grokked"


def test_eta_from_measured_speed_budgets_and_early_stops():
    # two finished runs used half their budget at 100 steps/s: each of 3 runs left (1000 steps)
    # is expected to take 500 steps, 5 s
    assert eta_s([1000] * 3, [0.5, 0.5], [100.0, 100.0]) == pytest.approx(15.0)
    assert eta_s([1000] * 3, [1.0, 1.0], [100.0, 100.0]) == pytest.approx(30.0)  # none stopped early
    # two lanes share the work, but never below the longest single unit
    assert eta_s([1000] * 4, [1.0], [100.0], lanes=2) == pytest.approx(20.0)
    assert eta_s([1000], [1.0], [100.0], lanes=4) == pytest.approx(10.0)
    assert eta_s([], [1.0], [100.0]) == 0.0


def test_eta_without_a_speed_uses_time_per_finished_unit_or_says_unknown():
    assert eta_s([100, 100], [], [], elapsed=30.0, done=3) == pytest.approx(20.0)
    assert eta_s([100, 100], [], []) is None
    assert sweep_line(1, 3, 0, None) == "1/3 runs done, 0 failed, ETA ?"
    assert sweep_line(3, 3, 1, 0.0) == "3/3 runs done, 1 failed"


def test_sweep_progress_counts_runs_of_packs_and_failures():
    p = SweepProgress([(4, 1000), (4, 1000), (2, 500)], start=0.0)
    p.done(0, failed=1, steps=500, speed=50.0)   # the pack's longest run stopped at half budget
    assert p.line(now=10.0) == "4/10 runs done, 1 failed, ETA 15s"  # (500 + 250) steps at 50/s
    p.done(2, failed=2)                            # the whole pack failed: nothing measured
    assert p.line(now=20.0) == "6/10 runs done, 3 failed, ETA 10s"
    p.done(1, steps=1000, speed=50.0)
    assert p.line(now=30.0) == "10/10 runs done, 3 failed"


def test_summary_reading_and_job_outcome_read_summaries_only():
    assert summary_reading([{"steps": 300, "steps_per_s": 10.0}, {"steps": 500, "steps_per_s": 30.0},
                            0.93, None]) == (500, 20.0)
    assert summary_reading([0.93]) == (None, None)  # a search sweeper's objective: no summary

    def ret(status, value):
        r = JobReturn()
        r.status, r.return_value = status, value
        return r

    rets = [ret(JobStatus.COMPLETED, {"steps": 120, "steps_per_s": 40.0}),
            ret(JobStatus.FAILED, RuntimeError("boom")), None]  # None: a job with no result
    assert job_outcome(rets) == {"failed": 2, "steps": 120, "speed": 40.0}


def rendered(text: str) -> list[str]:
    """The rows a terminal shows for `text`: each `\r` returns to column 0 and overwrites."""
    rows = []
    for chunk in text.split("\n"):
        row = ""
        for seg in chunk.split("\r"):
            row = seg + row[len(seg):]
        rows.append(row.rstrip())
    return [r for r in rows if r]


@pytest.mark.parametrize("through_bar", [True, False])
def test_log_lines_through_a_live_bar_are_whole_rows(monkeypatch, through_bar):
    """A bar and log lines on one terminal (a buffer standing for it): through `bar_logging` every
    log row starts with `[` and, the bar closed, no bar row is left; without it (as before) a log
    line starts on the bar's row."""
    import io
    import logging

    from tqdm import tqdm

    from grok.progress import bar_logging

    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    root, handler = logging.getLogger(), logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(name)s] - %(message)s"))
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    logger = logging.getLogger(f"grok.train.{uuid.uuid4().hex}")  # new: no cached level check
    bar = tqdm(total=20, file=sys.stderr, ncols=80, leave=False, mininterval=0)
    with bar_logging(through_bar):
        for i in range(20):
            if i % 5 == 0:
                logger.info("step %d", i)
            bar.update(1)
        bar.close()
    rows = rendered(screen.getvalue())
    logged = [r for r in rows if f"[{logger.name}] - step" in r]
    assert len(logged) == 4
    if through_bar:
        assert all(r.startswith("[") for r in logged) and not any(BAR.search(r) for r in rows), rows
    else:
        assert not all(r.startswith("[") for r in logged), rows


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.slow  # one launch.py sweep: ~6 s of CPU, ~20 s on 2 busy cores
def test_sweep_without_a_terminal_is_plain_lines_counting_jobs_and_failures(tmp_path):
    """A pipe (CI, SLURM logs): no bar, every log line whole, and one progress line per job that
    counts the failed one (job 0 finds a corrupt checkpoint)."""
    from grok.record.identity import job_dirname

    sweep = tmp_path / "sweep"
    bad = sweep / job_dirname(["seed=0", *TINY])
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    r = launch(["-m", "seed=0,1", *TINY, "train.steps=20", "logger=none", f"hydra.sweep.dir={sweep}"],
               cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "\r" not in out and not BAR.search(out)
    logged = [line for line in out.splitlines() if LOG_LINE.search(line)]
    assert logged and all(line.startswith("[") for line in logged)
    progress = [line.split(" - ", 1)[1] for line in logged if "][sweep][" in line]
    assert progress[0].startswith("1/2 runs done, 1 failed, ETA ")
    assert progress[1:] == ["2/2 runs done, 1 failed"]


@pytest.mark.slow  # ~8 s alone, ~25 s on 2 busy cores; test_log_lines_through_a_live_bar_... is its fast part
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_in_a_terminal_log_lines_are_whole_and_no_bar_is_left(tmp_path):
    """A real terminal (a tmux pane, 200x50): the live bar and the log lines (an eval line every
    10 evaluations, while the bar is drawn) share it; in the pane's text every log line starts
    with `[` and, the run done, no bar row is left."""
    sock = f"grok-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    cmd = (f"{sys.executable} {ROOT / 'launch.py'} {' '.join(TINY)} train.steps=20 train.eval_every=1 "
           f"logger=none hydra.run.dir={tmp_path / 'run'}; echo __END__; sleep 600")
    subprocess.run([*tmux, "new-session", "-d", "-x", "200", "-y", "50", cmd], check=True, cwd=tmp_path)
    try:
        pane, deadline = "", time.monotonic() + 120
        while "__END__" not in pane and time.monotonic() < deadline:
            time.sleep(0.3)
            pane = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-"], check=True,
                                  capture_output=True, text=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert "__END__" in pane, pane
    lines = pane.splitlines()
    logged = [line for line in lines if LOG_LINE.search(line)]
    assert sum(bool(re.search(r" step +\d+  train", line)) for line in logged) == 3, pane  # 0, 10, 20
    assert all(line.startswith("[") for line in logged), pane
    assert not any(BAR.search(line) for line in lines), pane


@pytest.mark.usefixtures("one_thread")  # tiny tensors: other threads only slow it
def test_a_pack_logs_its_runs_states_when_one_stops(tmp_path, caplog):
    """Two runs of one pack, budgets 10 and 20: one line when the first stops, one at the end."""
    import logging

    from conftest import compose_cfg

    from grok.train import train_pack

    cfgs = [compose_cfg([*TINY, "logger=none", "measures=off", f"train.steps={n}",
                         "train.checkpoint_every=10"]) for n in (10, 20)]
    with caplog.at_level(logging.INFO, logger="grok.train"):
        train_pack(cfgs, [tmp_path / "a", tmp_path / "b"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pack of 2 runs: ")]
    assert lines[1:] == ["pack of 2 runs: 1 training, 1 did not generalise",
                         "pack of 2 runs: 2 did not generalise"], lines
