"""grok: sweeps of small transformers on modular arithmetic.

The public API (layers and modules: docs/architecture.md):
- `grok.load_run(run_dir)` -> `grok.RunRecord`: a run folder read back (config, metrics, summary,
  kept weights, the model at a step); `grok.export.to_hooked_transformer` hands it to
  TransformerLens;
- `grok.check_run(cfg)`: the up-front check of a composed run config (its task, its init plan);
- `grok.run(cfg, run_dir)`, `grok.train_pack(cfgs, run_dirs)`: train (or resume) one run, a pack.
"""

__all__ = ["load_run", "RunRecord", "check_run", "run", "train_pack"]


def __getattr__(name):
    # Loaded on first use: importing any grok module runs this file, and the config check and
    # the job-folder resolver must not pay for torch, the models and pandas.
    if name in ("load_run", "RunRecord"):
        import grok.history as module
    elif name == "check_run":
        import grok.checks as module
    elif name in ("run", "train_pack"):
        import grok.train as module
    else:
        raise AttributeError(f"module 'grok' has no attribute {name!r}")
    return getattr(module, name)
