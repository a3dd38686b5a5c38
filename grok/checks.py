"""The up-front check of one run's config: everything a job needs, before any job starts.

The one place that builds a run's task to check it: `check` validates the choices that a task
is built from, builds the task (which checks its own values), validates the rest against it
(grok.config) and checks the init group (grok.init). The launchers run it on every job of a batch
before starting any (hydra_plugins/grok_launchers/_batch.py); a job runs it once and keeps the
task it returns.
"""

from omegaconf import DictConfig

from grok.config import select, validate, validate_choices, view
from grok.init import check_init
from grok.losses import token_loss
from grok.models import builder
from grok.optim import update_rule
from grok.tasks import build_task
from grok.tasks.base import Task


def check_run(cfg: DictConfig, device_here: bool = True, reference: DictConfig | dict | None = None,
              task: Task | None = None) -> tuple[Task, dict | None]:
    """Raise ConfigError on the first bad value; return the run's task (a modular task's parsed
    op is `task.op`) and its init plan (grok.init.check_init: None for the seeded init).
    `device_here=False` skips the check that the CUDA device is on this machine (jobs sent to
    other nodes); with a `reference` (the config of the same group choices), also no key added
    or removed (grok.config.check_keys). `task`: this config's task, if the caller built it."""
    validate_choices(cfg, reference)
    task = build_task(cfg) if task is None else task  # a modular task checks its op as it is built
    validate(cfg, task, update_rule(select(view(cfg), "optimizer")), device_here)
    builder(cfg)  # model._target_ names a model of grok.models
    token_loss(cfg)  # loss.fn._target_ names a token loss of grok.losses
    return task, check_init(cfg, task)


def check(cfg: DictConfig, device_here: bool = True,
          reference: DictConfig | dict | None = None) -> Task:
    """check_run's task alone (what a caller that does not train needs)."""
    return check_run(cfg, device_here, reference)[0]
