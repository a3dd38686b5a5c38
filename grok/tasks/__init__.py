"""Tasks a run can learn; `build_task(cfg)` makes the one `cfg.task._target_` names.

Modular ops (add, sub, mul, div, poly) name no target: they are the default."""

from hydra.utils import get_class

from grok.config import ConfigError
from grok.tasks.base import Task

MODULAR = "grok.tasks.modular.Modular"


def build_task(cfg) -> Task:
    target = cfg.task.get("_target_") or MODULAR
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - Hydra raises several kinds for a bad path
        raise ConfigError(f"task._target_={target!r}: not a task class") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task._target_={target!r}: not a task class")
    return cls(cfg)
