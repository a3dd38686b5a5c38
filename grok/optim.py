"""Optimizers over packs: AdamW, Adam and SGD on parameters with a leading run axis.

Every update rule is elementwise, so one update over stacked tensors is R independent updates.
Each run keeps its own hyperparameters (lr, weight decay, betas, momentum, warmup) as (R,) tensors
and its own step count, so runs that resumed from different steps share a pack. Per run, the
update is the one `torch.optim` makes (same formulas, same order of operations; tested against it
in float64). The learning-rate schedule is linear warmup: update k (0-based) of a run uses
lr * min(1, (k + 1) / warmup_steps), which starts at lr / warmup rather than wasting step 0 at 0.

Gradient transforms from the grokking literature run before the update, on each run's gradient
(docs/optimizers.md): the orthogonal gradient of Prieto et al. 2025 (`orthogonal`: each
parameter's gradient less its component along the parameter, rescaled to the gradient's norm)
and the Grokfast filters of Lee et al. 2024 (`grokfast`: g <- g + lamb * filtered g, the filter
an EMA or the mean of the last `window` gradients). Both are per run and per parameter, so a
pack's update is still its runs' updates.
"""

import torch

from grok.config import GROKFAST_FILTERS as FILTERS
from grok.config import OPTIMIZERS as KINDS

EPS = 1e-8  # torch's default
ORTHO_EPS = 1e-30  # ⊥Grad: added to |w|^2 and |g_orth| (as the reference implementation)


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-run (R,) tensor (already on like's device) shaped to broadcast over like (R, ...)."""
    return t.view(-1, *(1,) * (like.dim() - 1))


def _to_device(coeffs: dict, like: torch.Tensor) -> dict:
    """Per-run coefficients, computed on the CPU in float64 as torch computes its Python-float
    scalars, moved to the parameters' device and dtype in one transfer."""
    stacked = torch.stack(list(coeffs.values())).to(like.dtype).to(like.device, non_blocking=True)
    return dict(zip(coeffs, stacked))


class PackOptimizer:
    """Optimizer state for named stacked parameters; hyperparameters are per-run lists.

    State per run r: `steps[r]` (updates made), and per parameter `exp_avg`/`exp_avg_sq` (Adam)
    or `momentum_buffer` (SGD), sliced on the run axis like the parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], kind: str, lr, weight_decay,
                 warmup_steps, betas=None, momentum=None, grokfast: dict | None = None,
                 orthogonal: bool = False):
        """`grokfast`: {"filter": "ema" or "ma", "lamb": per-run list, "alpha": per-run list
        (ema), "window": one int for the pack (ma)}; `orthogonal`: ⊥Grad for every run."""
        if kind not in KINDS:
            raise ValueError(f"unknown optimizer {kind!r} (choose from {', '.join(KINDS)})")
        self.params, self.kind, self.orthogonal = params, kind, bool(orthogonal)
        self.filter = grokfast["filter"] if grokfast else None
        if self.filter not in (None, *FILTERS):
            raise ValueError(f"unknown Grokfast filter {self.filter!r} (choose from {', '.join(FILTERS)})")
        R = len(lr)

        def vec(values):  # hyperparameters live on the CPU in float64; cast per step
            return torch.tensor(values, dtype=torch.float64)

        self.hp = {"lr": vec(lr), "weight_decay": vec(weight_decay),
                   "warmup": vec(warmup_steps)}
        if kind == "sgd":
            self.hp["momentum"] = vec(momentum)
        else:
            b = vec(betas).view(R, 2)
            self.hp["beta1"], self.hp["beta2"] = b[:, 0].clone(), b[:, 1].clone()
        self.steps = torch.zeros(R, dtype=torch.long)
        zeros = {n: torch.zeros_like(w, memory_format=torch.preserve_format) for n, w in params.items()}
        self.state = ({"momentum_buffer": zeros} if kind == "sgd" else
                      {"exp_avg": zeros, "exp_avg_sq": {n: torch.zeros_like(w) for n, w in params.items()}})
        self.window = None
        if self.filter:
            self.hp["lamb"] = vec(grokfast["lamb"])
        if self.filter == "ema":
            self.hp["alpha"] = vec(grokfast["alpha"])
            self.state["grokfast_ema"] = {n: torch.zeros_like(w) for n, w in params.items()}
        elif self.filter == "ma":  # the last `window` gradients of each run: (R, window, ...)
            self.window = int(grokfast["window"])
            self.state["grokfast_ma"] = {n: w.new_zeros((w.shape[0], self.window, *w.shape[1:]))
                                         for n, w in params.items()}

    def lr_now(self) -> torch.Tensor:
        """(R,) float64: each run's learning rate for its next update (linear warmup)."""
        k = self.steps.double()
        w = self.hp["warmup"]
        factor = torch.where(w > 0, torch.clamp((k + 1) / w.clamp(min=1), max=1.0), 1.0)
        return self.hp["lr"] * factor

    def zero_grad(self) -> None:
        for w in self.params.values():
            w.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr = self.lr_now()
        done = self.steps.clone()  # each run's updates before this one
        self.steps += 1
        if self.orthogonal:
            self._orthogonal()
        if self.filter == "ema":
            self._grokfast_ema(done)
        elif self.filter == "ma":
            self._grokfast_ma(done)
        if self.kind == "sgd":
            self._sgd(lr)
        else:
            self._adam(lr, decoupled=self.kind == "adamw")

    def _adam(self, lr, decoupled):
        hp, k = self.hp, self.steps.double()
        b1, b2, wd = hp["beta1"], hp["beta2"], hp["weight_decay"]
        # As torch's single-tensor Adam: Python-float (float64) scalars per run, then one cast.
        c = _to_device({"decay": 1 - lr * wd, "wd": wd, "1-b1": 1 - b1, "b2": b2, "1-b2": 1 - b2,
                        "bc2_sqrt": (1 - b2 ** k).sqrt(), "-step_size": -(lr / (1 - b1 ** k))},
                       next(iter(self.params.values())))
        for n, w in self.params.items():
            g = w.grad
            m, v = self.state["exp_avg"][n], self.state["exp_avg_sq"][n]
            if decoupled:
                w.mul_(_col(c["decay"], w))
            else:
                g = g + _col(c["wd"], w) * w
            m.lerp_(g, _col(c["1-b1"], w))
            v.mul_(_col(c["b2"], w)).addcmul_(_col(c["1-b2"], w) * g, g)
            denom = (v.sqrt() / _col(c["bc2_sqrt"], w)).add_(EPS)
            w.addcmul_(m / denom, _col(c["-step_size"], w))

    def _orthogonal(self):
        """⊥Grad (Prieto et al. 2025): per run and parameter, g <- g - (w.g / (w.w + eps)) w,
        rescaled to the norm of g, so the step cannot scale the weights up (no naive loss
        minimisation along w, the road to softmax collapse)."""
        for w in self.params.values():
            R = w.shape[0]
            wf, gf = w.reshape(R, -1), w.grad.reshape(R, -1)
            proj = (wf * gf).sum(1) / ((wf * wf).sum(1) + ORTHO_EPS)
            g_orth = gf - proj[:, None] * wf
            scale = gf.norm(dim=1) / (g_orth.norm(dim=1) + ORTHO_EPS)
            w.grad = (g_orth * scale[:, None]).view_as(w)

    def _grokfast_ema(self, done):
        """Grokfast-EMA (Lee et al. 2024): ema <- alpha ema + (1 - alpha) g (a run's first ema is
        its first gradient), then g <- g + lamb ema: the slow part of the gradient amplified."""
        c = _to_device({"alpha": self.hp["alpha"], "1-alpha": 1 - self.hp["alpha"],
                        "lamb": self.hp["lamb"], "first": (done == 0).double()},
                       next(iter(self.params.values())))
        for n, w in self.params.items():
            g, ema = w.grad, self.state["grokfast_ema"][n]
            prev = torch.where(_col(c["first"], w).bool(), g, ema)
            ema.copy_(prev * _col(c["alpha"], w) + g * _col(c["1-alpha"], w))
            w.grad = g + ema * _col(c["lamb"], w)

    def _grokfast_ma(self, done):
        """Grokfast-MA (Lee et al. 2024): g <- g + lamb * mean of the last `window` gradients
        (this one included), once a run has made `window` of them; before that g is unchanged."""
        W, like = self.window, next(iter(self.params.values()))
        c = _to_device({"lamb": self.hp["lamb"], "full": (done + 1 >= W).double()}, like)
        runs = torch.arange(len(done), device=like.device)
        slot = (done % W).to(like.device)
        for n, w in self.params.items():
            g, buf = w.grad, self.state["grokfast_ma"][n]
            buf[runs, slot] = g
            mean = buf.sum(1) / W
            w.grad = torch.where(_col(c["full"], w).bool(), g + mean * _col(c["lamb"], w), g)

    def _sgd(self, lr):
        mom = self.hp["momentum"]
        plain = ((self.steps == 1) | (mom == 0)).double()  # torch: the first buffer is the grad
        c = _to_device({"wd": self.hp["weight_decay"], "mom": mom, "plain": plain, "-lr": -lr},
                       next(iter(self.params.values())))
        for n, w in self.params.items():
            g = w.grad + _col(c["wd"], w) * w
            buf = self.state["momentum_buffer"][n]
            new = torch.where(_col(c["plain"], w).bool(), g, buf * _col(c["mom"], w) + g)
            buf.copy_(new)
            w.addcmul_(new, _col(c["-lr"], w))

    # -- per-run state (checkpoints) and compaction --------------------------------------

    def run_state(self, r: int) -> dict:
        """Run r's optimizer state as plain tensors (for its own checkpoint)."""
        return {"steps": int(self.steps[r]),
                **{k: {n: t[r].detach().cpu().clone() for n, t in s.items()} for k, s in self.state.items()}}

    def load_run_state(self, r: int, state: dict) -> None:
        self.steps[r] = state["steps"]
        for k, s in self.state.items():
            for n, t in s.items():
                t[r].copy_(state[k][n])

    def select(self, keep: torch.Tensor, params: dict) -> "PackOptimizer":
        """The optimizer of the compacted pack holding runs `keep`, over its new `params`."""
        new = PackOptimizer.__new__(PackOptimizer)
        new.params, new.kind, new.orthogonal = params, self.kind, self.orthogonal
        new.filter, new.window = self.filter, self.window
        cpu_keep = keep.cpu()
        new.hp = {k: v.index_select(0, cpu_keep) for k, v in self.hp.items()}
        new.steps = self.steps.index_select(0, cpu_keep)
        new.state = {k: {n: t.index_select(0, keep.to(t.device)) for n, t in s.items()}
                     for k, s in self.state.items()}
        return new
