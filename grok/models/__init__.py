"""Models a run can train, all pack-first (see grok.models.pack). `build_model(cfg, task)` builds
the one `cfg.model._target_` names, as grok.tasks builds tasks: a function of (cfg, task,
n_runs) that returns the model; a new model is its class, such a function and one YAML file
in conf/model/ naming the function (registered in grok.targets by `@register("model")`: a name
from a config is looked up there, never imported). A config without `_target_` (a run folder
written before the key) gets the function of its `model.arch`."""

from grok.config import tables_exact
from grok.models.hooked import HookedTransformer
from grok.models.mlp import MLP
from grok.models.tables import Transformer
from grok.targets import register, resolve

BY_ARCH = {"transformer": "grok.models.build_transformer", "mlp": "grok.models.build_mlp"}


def _shape(task) -> dict:
    return dict(vocab=task.vocab, n_out=task.n_out, n_ctx=task.n_ctx)


@register("model")
def build_transformer(cfg, task, n_runs: int | None = None):
    """The transformer of `cfg.model` for `task`: the fastest path that computes it exactly (see
    conf/model/transformer.yaml for `impl`)."""
    m = cfg.model
    dims = dict(d_model=m.d_model, n_heads=m.n_heads, d_head=m.d_head, d_mlp=m.d_mlp,
                pos_embed=m.pos_embed, mlp_bias=m.mlp_bias)
    if m.impl != "hooked" and tables_exact(cfg, task):
        impl = "full" if m.impl == "full" else "tables"
        return Transformer(**_shape(task), **dims, impl=impl, n_runs=n_runs)
    return HookedTransformer(**_shape(task), **dims, n_layers=m.n_layers, attn_only=m.attn_only,
                             normalization=m.normalization, act=m.act, n_runs=n_runs)


@register("model")
def build_mlp(cfg, task, n_runs: int | None = None):
    """The MLP of `cfg.model` for `task` (one answer at the last position)."""
    return MLP(**_shape(task), d_model=cfg.model.d_model, d_mlp=cfg.model.d_mlp, n_runs=n_runs)


def builder(cfg):
    """The function `cfg.model._target_` names (by default, that of `model.arch`); a ConfigError
    naming the value if it names no registered model builder."""
    target = cfg.model.get("_target_") or BY_ARCH.get(cfg.model.get("arch"))
    return resolve("model", target, "model._target_")


def build_model(cfg, task, n_runs: int | None = None):
    """The model of `cfg.model` for `task` (`n_runs`: a pack of that many)."""
    return builder(cfg)(cfg, task, n_runs)
