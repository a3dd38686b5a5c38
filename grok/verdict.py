"""Did the run grok? A named criterion applied to the eval curve, so tables can tell apart
delayed generalisation, generalisation without delay, and no generalisation."""

GROKKED = "grokked"
NO_DELAY = "generalised without delay"
NOT_GENERALISED = "did not generalise"


def first_held(steps, values, threshold):
    """First step from which `values` stay >= threshold to the end, or None."""
    start = None
    for step, v in zip(steps, values):
        if v >= threshold:
            start = step if start is None else start
        else:
            start = None
    return start


def first_reached(steps, values, threshold):
    return next((s for s, v in zip(steps, values) if v >= threshold), None)


def verdict(metrics: list[dict], threshold: float = 0.99, delay_ratio: float = 2.0) -> dict:
    """Criterion "held": the grok step is the first eval from which test accuracy stays at or above
    `threshold` for the rest of the run; the memorisation step is the first eval where train
    accuracy reaches it. A grok step at least `delay_ratio` times the memorisation step is grokking."""
    steps = [m["step"] for m in metrics]
    test = [m["test_acc"] for m in metrics]
    mem = first_reached(steps, [m["train_acc"] for m in metrics], threshold)
    grok = first_held(steps, test, threshold)
    if grok is None:
        kind = NOT_GENERALISED
    elif mem is not None and grok > mem and grok >= delay_ratio * mem:
        kind = GROKKED
    else:
        kind = NO_DELAY
    best = max(range(len(test)), key=test.__getitem__) if test else None
    return {
        "verdict": kind,
        "criterion": f"held(test_acc>={threshold})",
        "memorisation_step": mem,
        "grok_step": grok,
        "grok_delay": None if grok is None or mem is None else grok - mem,
        "best_test_acc": test[best] if test else None,
        "best_test_step": steps[best] if test else None,
    }


def settled(metrics: list[dict], threshold: float, patience: int) -> bool:
    """True once both accuracies have held the bar for `patience` steps: safe to stop early."""
    if not metrics:
        return False
    steps = [m["step"] for m in metrics]
    since = [first_held(steps, [m[k] for m in metrics], threshold) for k in ("train_acc", "test_acc")]
    return all(s is not None for s in since) and steps[-1] - max(since) >= patience
