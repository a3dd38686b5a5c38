"""Seeded draws of a task's examples (NumPy only, no torch): the random streams of a run, and
n distinct examples of a task that draws them (`task.sample`)."""

import numpy as np

from grok.config import ConfigError


def rng_for(seed: int, stream: int, step: int = 0) -> np.random.Generator:
    """Independent, reproducible streams: 0 train, 1 test, 2 the batch of a step (infinite data),
    3 probes for the measures."""
    return np.random.default_rng([seed, stream, step])


def distinct(task, n: int, rng: np.random.Generator, exclude: set | None = None):
    """n distinct examples (by tokens) of `task` (grok.tasks), none in `exclude` (row bytes); a
    clear error if the task has too few."""
    seen = set(exclude or ())
    rows_t, rows_y = [], []
    for _ in range(200):
        t, y = task.sample(max(2 * (n - len(rows_t)), 64), rng)
        for i in range(len(t)):
            key = t[i].tobytes()
            if key not in seen:
                seen.add(key)
                rows_t.append(t[i])
                rows_y.append(y[i])
                if len(rows_t) == n:
                    return np.stack(rows_t), np.stack(rows_y)
    raise ConfigError(f"task {task.describe()}: could not draw {n} distinct examples "
                      f"(the task has too few; lower task.n_train or task.n_test)")
