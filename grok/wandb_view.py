"""How a run looks in W&B: a name from what makes it (`x^2+y^2 p97 f0.3 s1`), tags to filter by
(task, op kind, model, optimizer, and the verdict once known), every metric charted against
`step`, summaries that keep the best values, and list-valued measures as histograms W&B can draw.

Keys: the local record keeps its names; W&B gets them under sections (`wandb_key`; the text before
the first "/" is a W&B panel section), so a new workspace shows train against test unbuilt:
`train_acc` -> `train/acc`, `test_loss` -> `test/loss`, `lr` -> `train/lr`, a mixture's per-op
keys under `ops/`, per-position (per-digit) ones under `positions/`, the measures under
`measures/`. `record_name` maps back, and leaves a key logged before the sections as it is.
Table: docs/wandb.md.

The local record (metrics.jsonl) keeps every list exactly; W&B gets the same values at the same
steps, with lists as `wandb.Histogram`:
- `fourier_norms_*` (one norm per Fourier basis vector: constant, cos 1, sin 1, cos 2, ...) as a
  bar per basis vector, so W&B's histogram panel shows the spectrum over training;
- any other list of numbers (`neuron_freq`: each MLP neuron's frequency; `neuron_freq_var_frac`,
  `key_freqs`) as the histogram of its values, integer values one bin each.
"""

import numpy as np
from omegaconf import DictConfig

# The summary W&B keeps of these, besides the last value.
SUMMARIES = {"test_acc": "max,last", "train_acc": "max,last", "test_loss": "min,last",
             "train_loss": "min,last"}
MAX_BINS = 512  # wandb.Histogram's limit

# Record name -> W&B key: the one place both the logger and `analysis --wandb` read.
SECTIONED = {"train_loss": "train/loss", "train_acc": "train/acc", "lr": "train/lr",
             "test_loss": "test/loss", "test_acc": "test/acc",
             # summary.json's numbers of one side
             "final_train_loss": "train/final_loss", "final_train_acc": "train/final_acc",
             "final_test_loss": "test/final_loss", "final_test_acc": "test/final_acc",
             "best_test_acc": "test/best_acc", "best_test_step": "test/best_step"}
RECORD = {v: k for k, v in SECTIONED.items()}
PREFIXED = ("measures/", "ops/", "positions/")  # sections whose key is the record name prefixed


def wandb_key(name: str, ops=()) -> str:
    """The W&B key of eval row key `name`; `ops`: the task's groups (a mixture's ops), whose
    `<metric>/<op>` keys go under `ops/`. `step` stays the x axis."""
    if name == "step" or name in SECTIONED:
        return SECTIONED.get(name, name)
    head, _, rest = name.partition("/")
    if rest and rest in ops:
        return f"ops/{name}"
    if rest and head in ("train_loss", "train_acc", "test_loss", "test_acc"):
        return f"positions/{name}"  # one answer position's (a digit's) loss or accuracy
    return f"measures/{name}"


def summary_key(name: str) -> str:
    """The W&B summary key of summary.json key `name`: a side's numbers under that side,
    the run's verdict, steps and identity as they are."""
    return SECTIONED.get(name, name)


def record_name(key: str) -> str:
    """The record's name of W&B key `key`, logged with sections or before them (unchanged)."""
    if key in RECORD:
        return RECORD[key]
    for prefix in PREFIXED:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def run_name(cfg: DictConfig, task) -> str:
    """What makes the run, short: op and p for modular tasks (else the task), frac, seed."""
    rec = task.record()
    head = f"{rec['op']} p{rec['p']}" if "op" in rec and "p" in rec else task.name
    return " ".join([head, *([f"f{cfg.frac}"] if task.finite else []), f"s{cfg.seed}"])


def op_kind(task) -> str | None:
    """The op's group in the summary table (grok.opkinds), for modular tasks."""
    op = task.record().get("op")
    if op is None:
        return None
    try:
        from grok.opkinds import op_kind as kind  # sympy: paid only by runs that log to W&B

        return kind(op)
    except Exception:  # noqa: BLE001 - a tag is not worth failing a run for
        return None


def run_tags(cfg: DictConfig, task) -> list[str]:
    tags = [cfg.task.name, op_kind(task), f"model:{cfg.model.name}", f"opt:{cfg.optimizer.name}"]
    return [t[:64] for t in dict.fromkeys(tags) if t]  # W&B: at most 64 characters a tag


def define_metrics(run) -> None:
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    for key, summary in SUMMARIES.items():
        run.define_metric(wandb_key(key), step_metric="step", summary=summary)


def _numbers(v) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and x is not None and np.isfinite(x)
        for x in v)


def histogram(key: str, values: list):
    import wandb

    if key.startswith("fourier_norms") and len(values) <= MAX_BINS:
        return wandb.Histogram(np_histogram=(values, list(range(len(values) + 1))))
    if all(isinstance(x, int) for x in values) and max(values) - min(values) < MAX_BINS:
        edges = np.arange(min(values), max(values) + 2) - 0.5
        counts, edges = np.histogram(values, bins=edges)
        return wandb.Histogram(np_histogram=(counts.tolist(), edges.tolist()))
    return wandb.Histogram(values)


def wandb_row(row: dict, ops=()) -> dict:
    """An eval row as W&B gets it: keys under their sections (`wandb_key`), lists of numbers as
    histograms, the rest as it is."""
    return {wandb_key(k, ops): histogram(k, v) if _numbers(v) else v for k, v in row.items()}
