"""A run's weight history and a finished run folder read back for analysis.

With `train.snapshot_every=N` a run keeps its weights every N steps (step 0, the initialisation,
included) and at its last step, one small file per kept step beside the rolling resume
checkpoint: `snapshots/step_0001200.pt` holding {"step": 1200, "model": state dict}. Weights are
stored as trained (float32 by default), without optimizer state, and read with
`torch.load(..., weights_only=True)`. Each file is written atomically; a resumed run first
removes snapshots past its checkpoint (a killed run's, which it then writes again, bit-identical)
so a folder never holds two versions of a step, nor a snapshot a run trained at once would lack.

`load_run(run_dir)` gives what a researcher reads next: config, metrics (a DataFrame), summary,
the kept `steps`, `weights(step)` and `model(step)`.
"""

import re
from pathlib import Path

import torch

from grok import checkpoint
from grok.tracking import CHECKPOINT, CONFIG, METRICS, read_summary

SNAPSHOTS = "snapshots"
_NAME = re.compile(r"step_(\d+)\.pt")


def snapshot_path(run_dir, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step_{step:07d}.pt"


def snapshot_steps(run_dir) -> list[int]:
    """Steps with a snapshot in the folder, ascending."""
    folder = Path(run_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(int(m[1]) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))


def save_snapshot(run_dir, step: int, model: torch.nn.Module) -> None:
    """The weights of `model` (a single run's view) at `step`, as trained; copied out first, so a
    view into a pack does not drag the whole pack's storage into the file."""
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(exist_ok=True)
    checkpoint.write(path, {"step": step, "model": {k: v.detach().cpu().clone()
                                                    for k, v in model.state_dict().items()}})


def drop_snapshots_after(run_dir, step: int, also_at: bool = False) -> list[int]:
    """Remove snapshots past `step` (and at it, with `also_at`); the steps removed."""
    gone = [s for s in snapshot_steps(run_dir) if s > step or (also_at and s == step)]
    for s in gone:
        snapshot_path(run_dir, s).unlink(missing_ok=True)
    return gone


def _load(path: Path) -> dict:
    try:
        return checkpoint.read(path)
    except checkpoint.Unreadable as e:
        raise RuntimeError(f"{path} is not a readable weights file ({e})") from None


class RunRecord:
    """One run folder, read only. `steps`: the steps whose weights are kept (the snapshots, and
    the checkpoint's step once the run is finished: its final weights at full precision)."""

    def __init__(self, run_dir):
        import pandas as pd
        from omegaconf import OmegaConf

        self.dir = Path(run_dir)
        if not (self.dir / CONFIG).is_file():
            raise FileNotFoundError(f"{self.dir}: no {CONFIG}; not a run folder")
        self.config = OmegaConf.load(self.dir / CONFIG)
        self.summary = read_summary(self.dir)
        metrics = self.dir / METRICS
        self.metrics = (pd.read_json(metrics, lines=True, precise_float=True)
                        if metrics.is_file() and metrics.stat().st_size else pd.DataFrame())
        self._final = None
        if self.summary and self.summary.get("status") == "complete" and (self.dir / CHECKPOINT).is_file():
            self._final = self.summary.get("steps")
        self.steps = sorted(set(snapshot_steps(self.dir)) | ({self._final} - {None}))

    @property
    def final_step(self) -> int | None:
        """The last step of a finished run (None while it is unfinished)."""
        return self._final

    def weights(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The state dict at `step` (a kept step; None: the final weights)."""
        step = self._final if step is None else step
        if step is None:
            raise ValueError(f"{self.dir}: the run is not finished; give one of the kept steps {self.steps}")
        if step == self._final:  # the checkpoint's weights: full precision, whatever was snapshotted
            ck = _load(self.dir / CHECKPOINT)
            if ck.get("step") == step:
                return ck["model"]
        if step not in self.steps:
            raise KeyError(f"{self.dir}: no weights kept at step {step} (kept: {self.steps})")
        return _load(snapshot_path(self.dir, step))["model"]

    def model(self, step: int | None = None, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """The project's model with the weights at `step`, in eval mode (on the CPU)."""
        from grok.models import build_model
        from grok.tasks import build_task

        with torch.device("meta"):  # no memory, no draw from the random generator
            model = build_model(self.config, build_task(self.config))
        model.load_state_dict(self.weights(step), assign=True)
        return (model if dtype is None else model.to(dtype)).eval()

    def task(self):
        from grok.tasks import build_task

        return build_task(self.config)

    def __repr__(self) -> str:
        verdict = (self.summary or {}).get("verdict", "unfinished")
        return f"RunRecord({str(self.dir)!r}, {verdict}, steps kept: {len(self.steps)})"


def load_run(run_dir) -> RunRecord:
    """A finished (or running) run folder: config, metrics, summary, kept steps and weights."""
    return RunRecord(run_dir)
