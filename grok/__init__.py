"""grok: sweeps of small transformers on modular arithmetic, to study when and how they grok."""
