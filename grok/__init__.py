"""grok: sweeps of small transformers on modular arithmetic.

The public API (layers and modules: docs/architecture.md):
- `grok.load_run(run_dir)` -> `grok.RunRecord`: a run folder read back (config, metrics, summary,
  kept weights, the model at a step); `grok.export.to_hooked_transformer` hands it to
  TransformerLens;
- `grok.check_run(cfg)`: the up-front check of a composed run config (its task, its init plan);
- `grok.compose(overrides)` -> DictConfig: one run's config from conf/, checked as a launch checks
  it (bad input: `grok.BadInput`, one line); `grok.run(configs, sweep_dir)`: train them into run
  folders under a sweep folder, as packs, resumably (grok/api.py; docs/notebook.md);
- `grok.train_pack(cfgs, run_dirs)`: train (or resume) a pack into folders of the caller's choice.
"""

__all__ = ["load_run", "RunRecord", "check_run", "compose", "run", "BadInput", "RunFailed", "train_pack"]


def __getattr__(name):
    # Loaded on first use: importing any grok module runs this file, and the config check and
    # the job-folder resolver must not pay for torch, the models and pandas.
    if name in ("load_run", "RunRecord"):
        import grok.history as module
    elif name == "check_run":
        import grok.checks as module
    elif name in ("compose", "run", "BadInput", "RunFailed"):
        import grok.api as module
    elif name == "train_pack":
        import grok.train as module
    else:
        raise AttributeError(f"module 'grok' has no attribute {name!r}")
    return getattr(module, name)
