"""What a terminal shows while runs train, and what a sweep logs as its jobs finish
(docs/progress.md).

- In a terminal a pack has a live tqdm bar on stderr, and every log line goes through it
  (`bar_logging`): tqdm clears the bar, the line is written whole, the bar is drawn again below
  it. Without one (CI, SLURM logs, a pipe) there is no bar, only plain log lines.
- A pack of several runs shows their states on one line (`pack_line`): the bar's postfix, and a
  log line each time one of its runs stops.
- A sweep logs one line per finished job or pack (`SweepProgress`, `sweep_line`): runs done of
  N, failed so far, and an ETA from the steps/s measured so far and the remaining runs' budgets,
  scaled by the share of its budget a finished run used (runs that grok stop early).

The functions here are pure (no clock, no I/O) except `bar_wanted`, `bar_logging` and
`SweepProgress.finish`, which reads the clock and logs.
"""

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("sweep")  # lines read `[time][sweep][INFO] - 3/8 runs done, ...`

TRAINING, FAILED = "training", "failed"
NO_BAR = "GROK_NO_BAR"  # set (to 1) where several processes share one terminal (the pool launcher)


def bar_wanted(stream=None) -> bool:
    """A live bar only on a terminal, and not where a launcher said processes share it."""
    stream = sys.stderr if stream is None else stream
    return stream.isatty() and not os.environ.get(NO_BAR)


@contextlib.contextmanager
def bar_logging(active: bool):
    """While `active` (a bar is live), the root logger's console lines are written by
    tqdm.write, which clears the bar first and draws it again after: no line starts on the
    bar's row and no stale bar is left above. File handlers (launch.log) are untouched."""
    if not active:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def duration(seconds: float) -> str:
    """`45s`, `2m10s`, `1h03m`, `2d04h`: short and to the precision an estimate has."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def pack_line(states: list[str]) -> str:
    """A pack's runs' states on one line, counted, in order of first appearance with the
    runs still training first: `6 runs: 3 training, 2 grokked, 1 failed`."""
    counts: dict[str, int] = {TRAINING: 0} if TRAINING in states else {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    n = len(states)
    return f"{n} run{'' if n == 1 else 's'}: " + ", ".join(f"{c} {s}" for s, c in counts.items())


def eta_s(remaining: list[int], fractions: list[float], speeds: list[float], lanes: int = 1,
          elapsed: float | None = None, done: int = 0) -> float | None:
    """Seconds until the sweep ends. `remaining`: the step budget of each unit of work not
    finished (a job, or a pack: its longest budget); `fractions`: the share of its budget each
    finished unit used (a run that stopped early used less); `speeds`: their steps/s; `lanes`:
    units that run at once (pool n_jobs). Without a measured speed (a search sweeper's jobs
    return a number, not a summary), from the time per finished unit: `elapsed` over `done`.
    None when nothing is measured yet; 0 when nothing remains."""
    if not remaining:
        return 0.0
    lanes = max(1, min(lanes, len(remaining)))
    if speeds:
        share = sum(fractions) / len(fractions) if fractions else 1.0
        speed = sum(speeds) / len(speeds)
        each = [b * share / speed for b in remaining]
        return max(sum(each) / lanes, max(each))
    if elapsed is not None and done:
        return elapsed / done * len(remaining)  # the throughput so far, lanes included
    return None


def sweep_line(done: int, total: int, failed: int, eta: float | None, unit: str = "runs") -> str:
    """`3/8 runs done, 1 failed, ETA 2m10s` (ETA `?` until something is measured)."""
    tail = "" if done == total else f", ETA {'?' if eta is None else duration(eta)}"
    return f"{done}/{total} {unit} done, {failed} failed{tail}"


@dataclass
class SweepProgress:
    """A batch's progress, one unit of work (a job, or a pack) at a time. `units`: per unit, its
    run count and step budget; `lanes`: units that run at once."""

    units: list[tuple[int, int]]
    lanes: int = 1
    start: float = field(default_factory=time.monotonic)
    done_units: set[int] = field(default_factory=set)
    failed: int = 0
    fractions: list[float] = field(default_factory=list)
    speeds: list[float] = field(default_factory=list)

    def done(self, k: int, failed: int = 0, steps: int | None = None,
             speed: float | None = None) -> None:
        """Unit k has finished: `failed` of its runs failed; `steps` the most any of its runs
        took and `speed` their steps/s, where the runs' summaries say (else None)."""
        self.done_units.add(k)
        self.failed += failed
        budget = self.units[k][1]
        if steps is not None and budget:
            self.fractions.append(min(1.0, steps / budget))
        if speed:
            self.speeds.append(speed)

    def line(self, now: float) -> str:
        runs = sum(n for n, _ in self.units)
        done = sum(self.units[k][0] for k in self.done_units)
        remaining = [b for k, (_, b) in enumerate(self.units) if k not in self.done_units]
        eta = eta_s(remaining, self.fractions, self.speeds, self.lanes, now - self.start,
                    len(self.done_units))
        return sweep_line(done, runs, self.failed, eta)

    def finish(self, k: int, failed: int = 0, steps: int | None = None,
               speed: float | None = None) -> str:
        """`done`, then log the sweep's line (and return it)."""
        self.done(k, failed, steps, speed)
        line = self.line(time.monotonic())
        log.info("%s", line)
        return line


def summary_reading(summaries: list) -> tuple[int | None, float | None]:
    """(most steps, mean steps/s) of the runs of a unit whose results are summaries (dicts with
    `steps` and `steps_per_s`); (None, None) where none are (failed runs, a search objective)."""
    rows = [s for s in summaries if isinstance(s, dict) and isinstance(s.get("steps"), int)]
    speeds = [s["steps_per_s"] for s in rows if s.get("steps_per_s")]
    return (max((s["steps"] for s in rows), default=None),
            sum(speeds) / len(speeds) if speeds else None)
