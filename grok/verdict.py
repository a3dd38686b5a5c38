"""Did the run grok, and in which phase did it end? Named criteria applied to the eval curves, so
tables can tell apart delayed generalisation, generalisation without delay, and the ways a run
fails to generalise (docs/science.md: The verdict, Phases).

Pure functions of the metrics rows ({"step", "train_acc", "test_acc", ...}): training calls them
for its summary and early stop, analysis for runs recorded before a key existed."""

GROKKED = "grokked"
NO_DELAY = "generalised without delay"
NOT_GENERALISED = "did not generalise"

# Phases: Liu et al.'s four (effective theory of grokking), plus semi-grokking and ungrokking.
COMPREHENSION = "comprehension"    # generalised without delay
GROKKING = "grokking"              # generalised well after memorising
SEMI_GROKKING = "semi-grokking"    # train fits, test plateaus between `onset` and the threshold
UNGROKKING = "ungrokking"          # test held the threshold over a window, then lost it for good
MEMORISATION = "memorisation"      # train fits, test never does
CONFUSION = "confusion"            # train never fits
PHASES = (COMPREHENSION, GROKKING, SEMI_GROKKING, UNGROKKING, MEMORISATION, CONFUSION)

HELD = "held"                 # every eval from the grok step on at the bar (one dip resets it)
HELD_MEDIAN = "held_median"   # most evals of every trailing window at the bar: spikes forgiven
CRITERIA = (HELD, HELD_MEDIAN)
THRESHOLD, DELAY_RATIO, ONSET, WINDOW = 0.99, 2.0, 0.5, 2000   # conf/config.yaml `grok:`
PHASE_KEYS = ("onset_step", "phase", "spikes", "lowest_test_after_grok")


def _window_starts(steps, window):
    """For each eval i, the first eval of its trailing window: step > steps[i] - window (i itself
    always in it, so a window of 0 is the eval alone)."""
    starts, lo = [], 0
    for i, s in enumerate(steps):
        while lo < i and steps[lo] <= s - window:
            lo += 1
        starts.append(lo)
    return starts


def held_stretches(steps, values, threshold, window=0):
    """(first step from which `values` hold >= threshold to the end, or None; the longest stretch
    in steps over which they held from an eval at the bar). Held at eval i from eval g: more than
    half the evals of i's trailing window that are not before g are at the bar (their lower
    median is); window 0 asks it of every eval (criterion `held`)."""
    above = [v >= threshold for v in values]
    before = [0]  # evals at the bar before index k
    for a in above:
        before.append(before[-1] + a)
    starts = _window_starts(steps, window)
    longest = 0
    for g in (k for k, a in enumerate(above) if a):
        last = g
        for i in range(g, len(steps)):
            lo = max(g, starts[i])
            if 2 * (before[i + 1] - before[lo]) <= i + 1 - lo:
                break
            last = i
        else:
            return steps[g], max(longest, steps[-1] - steps[g])
        longest = max(longest, steps[last] - steps[g])
    return None, longest


def first_held(steps, values, threshold, window=0):
    """First step from which `values` stay >= threshold to the end (dips forgiven as
    `held_stretches` says where window > 0), or None."""
    return held_stretches(steps, values, threshold, window)[0]


def first_reached(steps, values, threshold):
    return next((s for s, v in zip(steps, values) if v >= threshold), None)


def width(criterion: str, window: int) -> int:
    """The trailing window a criterion forgives dips over: none for `held`."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion {criterion!r}: unknown (choose from {', '.join(CRITERIA)})")
    return window if criterion == HELD_MEDIAN else 0


def criterion_name(criterion: str, threshold: float, window: int) -> str:
    """What the summary's `criterion` says: the rule and its parameters."""
    if criterion == HELD:
        return f"held(test_acc>={threshold})"
    return f"held_median(test_acc>={threshold}, window={window})"


def _median(values):
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def verdict(metrics: list[dict], threshold: float = THRESHOLD, delay_ratio: float = DELAY_RATIO,
            onset: float = ONSET, window: int = WINDOW, criterion: str = HELD_MEDIAN) -> dict:
    """The grok step is the first eval at the bar from which test accuracy holds `threshold` to
    the end (criterion `held_median`: more than half the evals of every trailing `window` steps
    at the bar, so a loss spike is counted in `spikes`, not a flip of the verdict; `held`: every
    eval). The memorisation step is the first eval where train accuracy reaches the bar. A grok
    step at least `delay_ratio` times the memorisation step is grokking. The phase and onset
    step (first eval with test accuracy >= `onset`) as `phase` says."""
    steps = [m["step"] for m in metrics]
    test = [m["test_acc"] for m in metrics]
    mem = first_reached(steps, [m["train_acc"] for m in metrics], threshold)
    grok, longest = held_stretches(steps, test, threshold, width(criterion, window))
    if grok is None:
        kind = NOT_GENERALISED
    elif mem is not None and grok > mem and grok >= delay_ratio * mem:
        kind = GROKKED
    else:
        kind = NO_DELAY
    best = max(range(len(test)), key=test.__getitem__) if test else None
    after = [v for s, v in zip(steps, test) if grok is not None and s > grok]
    tail = [v for s, v in zip(steps, test) if s > steps[-1] - window] if test else []
    return {
        "verdict": kind,
        "criterion": criterion_name(criterion, threshold, window),
        "memorisation_step": mem,
        "grok_step": grok,
        "grok_delay": None if grok is None or mem is None else grok - mem,
        "best_test_acc": test[best] if test else None,
        "best_test_step": steps[best] if test else None,
        "onset_step": first_reached(steps, test, onset),
        "phase": _phase(kind, mem, longest, tail, window, onset) if test else None,
        "spikes": sum(v < threshold for v in after),
        "lowest_test_after_grok": min(after, default=None if grok is None else test[steps.index(grok)]),
    }


def _phase(kind, mem, longest, tail, window, onset) -> str:
    """The phase of a run whose verdict is `kind`: see `phase`."""
    if kind != NOT_GENERALISED:
        return GROKKING if kind == GROKKED else COMPREHENSION
    if mem is None:
        return CONFUSION
    if longest >= window:
        return UNGROKKING
    return SEMI_GROKKING if _median(tail) >= onset else MEMORISATION


def phase(metrics: list[dict], threshold: float = THRESHOLD, delay_ratio: float = DELAY_RATIO,
          onset: float = ONSET, window: int = WINDOW, criterion: str = HELD_MEDIAN) -> dict:
    """The phase keys of `verdict` (`PHASE_KEYS`). Phase: grokking or comprehension where the
    verdict is grokked or generalised without delay; otherwise confusion where train accuracy
    never reached the threshold; ungrokking where test accuracy had held it (by the criterion)
    over at least `window` steps; semi-grokking where the median test accuracy of the last
    `window` steps is >= `onset`; else memorisation."""
    v = verdict(metrics, threshold, delay_ratio, onset, window, criterion)
    return {k: v[k] for k in PHASE_KEYS}


def settled(metrics: list[dict], threshold: float, patience: int, window: int = WINDOW,
            criterion: str = HELD_MEDIAN) -> bool:
    """True once both accuracies have held the bar (by the verdict's criterion) for `patience`
    steps and the last eval is at it (never mid-spike): safe to stop early."""
    if not metrics:
        return False
    steps, last, w = [m["step"] for m in metrics], metrics[-1], width(criterion, window)
    since = [first_held(steps, [m[k] for m in metrics], threshold, w) for k in ("train_acc", "test_acc")]
    return (all(s is not None for s in since) and steps[-1] - max(since) >= patience
            and last["train_acc"] >= threshold and last["test_acc"] >= threshold)
