"""A finished run folder read back for analysis, with its model (the record's snapshots and
checkpoint: grok.record.checkpoint; weights read with `torch.load(..., weights_only=True)`).

`load_run(run_dir)` gives what a researcher reads next: config, metrics (a DataFrame), summary,
the kept `steps`, `weights(step)` and `model(step)`.
"""

from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from grok.models import build_model
from grok.record import checkpoint
from grok.record.checkpoint import snapshot_path, snapshot_steps
from grok.record.files import CHECKPOINT, CONFIG, METRICS
from grok.record.local import read_summary
from grok.record.status import continuation
from grok.tasks import build_task


def _load(path: Path) -> dict:
    try:
        return checkpoint.read(path)
    except checkpoint.Unreadable as e:
        raise RuntimeError(f"{path} is not a readable weights file ({e})") from None


class RunRecord:
    """One run folder, read only. `steps`: the steps whose weights are kept (the snapshots, and
    the checkpoint's step once the run is finished: its final weights at full precision)."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        if not (self.dir / CONFIG).is_file():
            raise FileNotFoundError(f"{self.dir}: no {CONFIG}; not a run folder")
        self.config = OmegaConf.load(self.dir / CONFIG)
        self.summary = read_summary(self.dir)
        metrics = self.dir / METRICS
        self.metrics = (pd.read_json(metrics, lines=True, precise_float=True)
                        if metrics.is_file() and metrics.stat().st_size else pd.DataFrame())
        self._final = None
        s = self.summary or {}
        final = s.get("steps")  # a step names a snapshot file: an int, never a string
        # a continuation in progress: its summary is an earlier budget's, its final weights gone
        self.unfinished = continuation(self.dir, s) if s.get("status") == "complete" else None
        if s.get("status") == "complete" and (self.dir / CHECKPOINT).is_file() \
                and isinstance(final, int) and not isinstance(final, bool) and not self.unfinished:
            self._final = final
        self.steps = sorted(set(snapshot_steps(self.dir)) | ({self._final} - {None}))

    @property
    def final_step(self) -> int | None:
        """The last step of a finished run (None while it is unfinished)."""
        return self._final

    def weights(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The state dict at `step` (a kept step; None: the final weights)."""
        step = self._final if step is None else step
        if step is None:
            why = f" ({self.unfinished})" if self.unfinished else ""
            raise ValueError(f"{self.dir}: the run is not finished{why}; give one of the kept steps "
                             f"{self.steps}")
        if step == self._final:  # the checkpoint's weights: full precision, whatever was snapshotted
            ck = _load(self.dir / CHECKPOINT)
            if ck.get("step") == step:
                return ck["model"]
        if step not in self.steps:
            raise KeyError(f"{self.dir}: no weights kept at step {step} (kept: {self.steps})")
        return _load(snapshot_path(self.dir, step))["model"]

    def model(self, step: int | None = None, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """The project's model with the weights at `step`, in eval mode (on the CPU)."""
        with torch.device("meta"):  # no memory, no draw from the random generator
            model = build_model(self.config, build_task(self.config))
        model.load_state_dict(self.weights(step), assign=True)
        return (model if dtype is None else model.to(dtype)).eval()

    def task(self):
        return build_task(self.config)

    def __repr__(self) -> str:
        verdict = "unfinished" if self.unfinished else (self.summary or {}).get("verdict", "unfinished")
        return f"RunRecord({str(self.dir)!r}, {verdict}, steps kept: {len(self.steps)})"


def load_run(run_dir) -> RunRecord:
    """A finished (or running) run folder: config, metrics, summary, kept steps and weights."""
    return RunRecord(run_dir)
