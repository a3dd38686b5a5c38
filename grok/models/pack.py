"""What every model of a pack shares: parameters with a leading run axis, and the three views the
trainer takes of them (stack single models into a pack, read run r, keep some runs)."""

import torch
from torch import nn


def _set(module: nn.Module, name: str, value) -> None:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    setattr(module, leaf, value)


class PackModule(nn.Module):
    """A model built by `type(self)(**self.dims, n_runs=R)`: every parameter has a leading run
    axis when n_runs is set; a single model (n_runs=None) has none."""

    dims: dict
    n_runs: int | None

    @classmethod
    def stack(cls, models: list["PackModule"]) -> "PackModule":
        """A pack whose run r has exactly the weights of models[r] (single models, same dims)."""
        pack = cls._empty(models[0].dims, len(models))
        for name, _ in models[0].named_parameters():
            ws = [dict(m.named_parameters())[name] for m in models]
            _set(pack, name, nn.Parameter(torch.stack([w.detach() for w in ws]).clone()))
        return pack

    def logits_at(self, tokens: torch.Tensor, at, runs: slice | None = None) -> torch.Tensor:
        """Logits (R, B, K, n_out) at the K positions `at` (what training and evaluation read)."""
        return self(tokens, at=at, runs=runs)

    def run(self, r: int) -> "PackModule":
        """Run r of a pack as a single model whose parameters are views of the pack's (no copy,
        no gradient): what the progress measures and the run's own checkpoint read."""
        return self._with(None, lambda w: nn.Parameter(w.detach()[r], requires_grad=False))

    def select(self, keep: torch.Tensor) -> "PackModule":
        """A smaller pack of the runs at indices `keep` (copies): compaction of a pack."""
        return self._with(len(keep), lambda w: nn.Parameter(w.detach().index_select(0, keep)))

    def _with(self, n_runs, take) -> "PackModule":
        out = self._empty(self.dims, n_runs)
        for name, w in self.named_parameters():
            _set(out, name, take(w))
        return out

    @classmethod
    def _empty(cls, dims: dict, n_runs):
        """A module of these dims with placeholder parameters: built on the meta device, so it
        costs no memory and draws nothing from torch's random generator."""
        with torch.device("meta"):
            return cls(**dims, n_runs=n_runs)

    def _lead(self, w: torch.Tensor | None, runs: slice | None):
        """`w` with a run axis (a single model is a pack of one), restricted to `runs`."""
        if w is None:
            return None
        w = w if self.n_runs else w.unsqueeze(0)
        return w if runs is None else w[runs]
