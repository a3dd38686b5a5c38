"""What a run learns: a `Task` turns a config into token sequences and the targets to predict.

Examples are tokens (N, n_ctx) with targets (N, n_ctx): target t is what the model should output
after reading tokens[:t+1] (teacher forcing), and -1 means "no loss here". Only the positions a
task names in `positions` ever carry a target, so the model computes logits there only.

Data comes in two kinds:
- a finite universe (`universe()`: every example, in a fixed order) split by `frac` with the seed,
  as the modular tasks have always been;
- drawn examples (`sample(n, rng)`): `task.n_train` distinct examples drawn with the seed, a test
  set of `task.n_test` others, or, with `n_train: null`, infinite data: a fresh batch of
  `task.batch` every step, drawn from (seed, step) so a resumed run draws exactly what it would
  have drawn. The train loss is then a loss on unseen data.

Tasks build their examples with Python integers and NumPy (exact labels, no torch), and check
their own config values (`check`), so bad input is refused before any job starts.
"""

import numpy as np
import torch

from grok.config import ConfigError, n_train_for
from grok.measures import weight_sq
from grok.targets import register

IGNORE = -1


class Task:
    name: str = "task"
    vocab: int          # input tokens
    n_out: int          # output classes (the unembedding's width)
    n_ctx: int          # sequence length
    positions: tuple    # sequence positions that can carry a target
    position_names: tuple  # one name per position (per-position losses are logged under them)
    finite: bool        # universe() exists and `frac` splits it; else sample() and n_train

    def __init_subclass__(cls, **kwargs):
        """Defining a task registers it as a `task._target_` (grok.targets): configs name it, never
        import it."""
        super().__init_subclass__(**kwargs)
        register("task", cls)

    def describe(self) -> str:
        """One line for logs, records and tables."""
        return self.name

    def universe(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def capacity(self) -> int:
        """How many distinct examples a drawn task has (exact Python int; checked up front)."""
        raise NotImplementedError

    def size(self) -> int:
        """Examples in the universe (finite tasks), without building them."""
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def split(self, n: int, frac: float, seed: int):
        """Train and test indices (sorted) into the universe of n examples: a shuffle that depends
        only on the seed (the split modular runs have always had)."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        k = n_train_for(frac, n)
        return perm[:k].sort().values, perm[k:].sort().values

    def part_sizes(self) -> list[int]:
        """Sizes of the parts `frac` splits one by one (a mixture: each op's pairs)."""
        return [self.size()]

    # -- example groups with their own metrics and verdict (a mixture's ops) ---------------------
    groups: tuple = ()  # names; metrics `<name>/<group>` (test_acc/x+y) and a verdict each

    def scores(self, model, data) -> dict:
        """Per-group train/test loss and accuracy of `model` (a single run's) at an eval."""
        return {}

    def shape(self) -> tuple:
        """What runs of one pack must share (tensor shapes of examples and model)."""
        return (self.vocab, self.n_out, self.n_ctx, tuple(self.positions))

    def record(self) -> dict:
        """Fields a run's summary carries for this task (tables group by them)."""
        return {"task": self.name, "task_desc": self.describe()}

    def stats(self, data) -> dict:
        """Facts about this run's data for its summary (e.g. class balance)."""
        return {}

    def probe(self, data, device):
        """Inputs the progress measures read, built once per run."""
        return None

    def measures(self, model, probe, full: bool, mc) -> dict:
        """Progress measures of `model` (a single run's model): weight norms by default."""
        return weight_sq(model)

    def skipped_measures(self, model) -> dict:
        """{measure: why} for this task's measures that do not apply to `model` (a single run's):
        `measures` leaves their keys out, and the run's summary says why (`measures_skipped`)."""
        return {}


def targets_from(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Next-token targets: target t = tokens[t+1] where mask[t], else -1."""
    out = np.full_like(tokens, IGNORE)
    out[:, :-1] = np.where(mask[:, :-1], tokens[:, 1:], IGNORE)
    return out


def need_int(cfg, key: str, lo: int, hi: int | None = None) -> int:
    """A task config value that must be an integer in [lo, hi]; one clear line otherwise."""
    v = cfg.get(key)
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ConfigError(f"task.{key}={v!r}: must be an integer {rng}")
    return v
