"""Tasks a run can learn; `build_task(cfg)` makes the one `cfg.task._target_` names, a task class
registered in grok.targets (every task module is imported here, so each task has registered
itself): a run folder's config is data, so its name is looked up, never imported.

Modular ops (add, sub, mul, div, poly) name no target: they are the default."""

from grok.targets import resolve
from grok.tasks import arith, mixture, modular, sequences  # noqa: F401 - defining a task registers it
from grok.tasks.base import Task

MODULAR = "grok.tasks.modular.Modular"


def task_class(cfg) -> type[Task]:
    """The task class `cfg.task._target_` names (the modular task where none is named)."""
    return resolve("task", cfg.task.get("_target_") or MODULAR, "task._target_")


def build_task(cfg) -> Task:
    return task_class(cfg)(cfg)
