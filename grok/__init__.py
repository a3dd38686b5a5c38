"""grok: sweeps of small transformers on modular arithmetic. `grok.load_run(run_dir)` reads a run
folder back (grok.history); `grok.export.to_hooked_transformer` hands it to TransformerLens."""


def __getattr__(name):
    # Lazy: the config check that runs before any job imports grok without paying for torch.
    if name in ("load_run", "RunRecord"):
        from grok import history

        return getattr(history, name)
    raise AttributeError(f"module 'grok' has no attribute {name!r}")
