"""What a dotted name in a config may name: the project's own classes and functions, one registry
per kind, and the one place such a name is resolved (`resolve`).

A config's `task._target_`, `model._target_`, `optimizer._target_` and `loss.fn._target_` are read
back from run folders, sweep folders, `init.from` sources and W&B files, which are data: an edited
`config.yaml` naming a module of its own must not run it. So a name is looked up among what the
project has defined (a `grok.tasks.base.Task` subclass, a model builder of `grok.models`, an
`grok.optim.UpdateRule` subclass, a token loss of `grok.losses`: each registers itself here when it
is defined) and never imported; anything else is one ConfigError naming the key and the value.
"""

from grok.config import ConfigError

# What each kind is, for the one-line error, and where its registered names come from.
NOUNS = {"task": "a task class (grok.tasks)", "model": "a model builder of grok.models",
         "optimizer": "an update rule of grok.optim", "loss": "a token loss of grok.losses"}
REGISTRY: dict[str, dict[str, object]] = {kind: {} for kind in NOUNS}


def dotted(obj) -> str:
    """The `_target_` that names `obj`: its module and qualified name."""
    return f"{obj.__module__}.{obj.__qualname__}"


def register(kind: str, obj=None):
    """Make `obj` (a class or function) a `_target_` of `kind` under its dotted name; as a
    decorator (`@register("model")`), returns it unchanged."""
    def add(o):
        REGISTRY[kind][dotted(o)] = o
        return o

    return add if obj is None else add(obj)


def resolve(kind: str, target, key: str):
    """The registered `kind` that `target` names, looked up and never imported (a run folder is
    data); else a ConfigError naming `key` and the value, and what may be named."""
    found = REGISTRY[kind].get(target) if isinstance(target, str) else None
    if found is None:
        raise ConfigError(f"{key}={target!r}: not {NOUNS[kind]} (choose from "
                          f"{', '.join(REGISTRY[kind])})")
    return found
