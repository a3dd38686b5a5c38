"""Models a run can train, all pack-first (see grok.models.pack); `build_model` picks one."""

from grok.config import tables_exact
from grok.models.hooked import HookedTransformer
from grok.models.mlp import MLP
from grok.models.tables import Transformer


def build_model(cfg, task, n_runs: int | None = None):
    """The model of `cfg.model` for `task`: the fastest path that computes it exactly (see
    conf/model/transformer.yaml for `impl`)."""
    m = cfg.model
    shape = dict(vocab=task.vocab, n_out=task.n_out, n_ctx=task.n_ctx)
    if m.arch == "mlp":
        return MLP(**shape, d_model=m.d_model, d_mlp=m.d_mlp, n_runs=n_runs)
    dims = dict(d_model=m.d_model, n_heads=m.n_heads, d_head=m.d_head, d_mlp=m.d_mlp,
                pos_embed=m.pos_embed, mlp_bias=m.mlp_bias)
    if m.impl != "hooked" and tables_exact(cfg, task):
        impl = "full" if m.impl == "full" else "tables"
        return Transformer(**shape, **dims, impl=impl, n_runs=n_runs)
    return HookedTransformer(**shape, **dims, n_layers=m.n_layers, attn_only=m.attn_only,
                             normalization=m.normalization, act=m.act, n_runs=n_runs)
