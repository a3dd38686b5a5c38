"""Which runs may share a table cell: those whose configs differ in the seed alone.

A cell that says "✓ 2/3" claims three tries of one experiment. Runs that differ in anything else
(lr, d_model, the step budget, the verdict's threshold, ...) are different experiments, so
`pools` splits the runs into groups whose configs agree on every key but the seed, the table's
own axes and the keys that cannot change a run's results (`IGNORED`), and names each group by
the keys in which the groups differ (`optimizer.lr=0.001`). Each group is its own table.

An axis is any config key or group (`frac`, `op`, `task`, `model`, `optimizer.lr`): a group name
stands for its `name` and covers every key under it (`task` covers `task.n_digits`). The `op`
axis of modular runs covers the task group too (`task=add` is a way of saying `op=x+y`; the
task's own `op` key is a default, not the op trained).
"""

import pandas as pd

from .collate import is_modular

# Keys that never change what a run computes or how it is judged (where it ran, how it logged,
# how often it saved, which sweep launched it) and the measures (evaluation only); the objective
# a search sweeper reads, and the builders a group's `name` already names (runs recorded before
# the configs named them have none), as in grok.record.identity.
IGNORED = ("sweep_id", "logger", "measures", "train.device", "train.threads", "train.chunk",
           "train.max_memory_gb", "train.checkpoint_every", "optimized_metric", "model._target_",
           "optimizer._target_")
GROUPS = ("task", "model", "optimizer", "loss", "logger", "measures")  # config groups: `<g>.name`
SUMMARY_AXES = {"op": "op_pretty", "frac": "frac", "p": "p", "seed": "seed",
                "task": "task", "model": "model", "optimizer": "optimizer"}


class PoolError(ValueError):
    """A grid that cannot be drawn as asked (an axis no run has); the message says which."""


def _under(key: str, prefixes) -> bool:
    return any(key == k or key.startswith(k + ".") for k in prefixes)


def covered(axis: str, modular: bool) -> tuple[str, ...]:
    """The config keys an axis stands for (a mixture's op axis value is its set of `ops`)."""
    if axis == "op":
        return ("op", "task") if modular else ("op", "ops")
    if axis == "task":
        return ("task", "op")  # other tasks' configs hold an unused op; the axis names the task
    return (axis,)


def axis_values(runs: pd.DataFrame, axis: str) -> pd.Series:
    """Each run's value on `axis`: the summary's column where there is one (op: its pretty
    form; other tasks: their name), else the flattened config's value (a group: its name)."""
    if axis == "op":
        return runs.op_pretty.where(runs.op_pretty.notna(), runs.task)
    if axis in SUMMARY_AXES and SUMMARY_AXES[axis] in runs:
        return runs[SUMMARY_AXES[axis]]  # a run whose task has no frac (or p): "(unset)"
    key = f"{axis}.name" if axis in GROUPS else axis
    values = runs.config.map(lambda c: c.get(key) if isinstance(c, dict) else None)
    if values.isna().all():
        raise PoolError(f"no run has config key {axis!r} (e.g. frac, op, task, model, optimizer.lr)")
    return values


def unused(modular: bool, has_p: bool = True, has_frac: bool = True) -> tuple[str, ...]:
    """Config keys a run's task does not read: for modular runs the task's own `op` default; for
    other tasks the top-level op, and p and frac unless their summary records them (a mixture
    has p, a finite task frac)."""
    keys = ("task.op",) if modular else ("op",)
    return keys + (() if has_p else ("p",)) + (() if has_frac else ("frac",))


def signature(config, axes, modular: bool, has_frac: bool = True, has_p: bool = True) -> tuple:
    """What a run shares with the runs it may be pooled with: every config key and value but
    the seed, the axes, IGNORED and the keys its task does not read (`unused`)."""
    if not isinstance(config, dict):
        return ()
    skip = ("seed", *IGNORED, *(k for a in axes for k in covered(a, modular)),
            *unused(modular, has_p, has_frac))
    return tuple(sorted((k, repr(v)) for k, v in config.items() if not _under(k, skip)))


def pools(runs: pd.DataFrame, axes=("frac", "op")) -> list[tuple[str, pd.DataFrame]]:
    """Runs split into groups that differ in seed and `axes` only: [(label, runs)], the label
    naming the keys in which this group differs from the others ("" when there is one group)."""
    if runs.empty:
        return []
    def col(name, default):  # frames built by hand (tests, other readers) may lack a column
        return runs[name] if name in runs else pd.Series([default] * len(runs), index=runs.index)

    def full(c, p, model, opt):  # the summary's p, model and optimizer where a config lacks them
        known = {"p": p, "model.name": model, "optimizer.name": opt}
        return {**{k: v for k, v in known.items() if v is not None and not pd.isna(v)},
                **(c if isinstance(c, dict) else {})}

    configs = [full(*x) for x in zip(col("config", {}), col("p", None), col("model", None),
                                     col("optimizer", None))]
    modular = [is_modular(t) for t in col("task", "poly")]
    has = [(pd.notna(f), pd.notna(p)) for f, p in zip(col("frac", 1.0), col("p", 1))]
    sigs = [signature(c, axes, m, *h) for c, m, h in zip(configs, modular, has)]
    first = {}  # each group's first run: where its label reads keys its signature leaves out
    for i, sig in enumerate(sigs):
        first.setdefault(sig, i)
    keys = pd.Series(sigs, index=runs.index)
    groups = {s: runs[keys.map(lambda x, s=s: x == s)] for s in first}
    if len(groups) == 1:
        return [("", runs)]
    as_dicts = {s: dict(s) for s in groups}
    every = set().union(*as_dicts.values())
    differ = sorted(k for k in every if len({d.get(k) for d in as_dicts.values()}) > 1)
    # A group whose choice differs (task=digits_add vs task=poly) is named by its name alone.
    named = {k.rsplit(".", 1)[0] for k in differ if k.endswith(".name") and k.count(".") == 1}
    differ = [k for k in differ if k.endswith(".name") or not _under(k, named)]
    out = []
    for s, part in groups.items():
        d, i = as_dicts[s], first[s]

        def show(k):
            if k in d:
                return _show(d[k])
            if k in unused(modular[i], has[i][1], has[i][0]):
                return "n/a"  # a key this task does not read
            return _show(repr(configs[i][k]) if k in configs[i] else None)  # an axis here: its value

        label = ", ".join(f"{k.removesuffix('.name') if k.count('.') == 1 else k}={show(k)}" for k in differ)
        out.append((label, part))
    return sorted(out, key=lambda x: x[0])


def _show(value_repr) -> str:
    if value_repr is None:
        return "(unset)"
    return value_repr.strip("'")
