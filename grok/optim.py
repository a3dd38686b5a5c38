"""Optimizers over packs: base update rules on parameters with a leading run axis, and the
gradient transforms of the grokking literature on any of them.

A base update rule is one class here (`AdamW`, `Adam`, `SGD`): it declares the hyperparameters
its config holds (`HYPER`, which grok.config checks), the per-parameter state it keeps (`STATE`,
named as torch.optim names it, so checkpoints keep one layout) and its update over stacked (R, ...)
tensors. Defining a subclass of `UpdateRule` registers it under its dotted name, the `_target_`
that conf/optimizer/<name>.yaml gives; a config's `_target_` resolves only to a registered class
(`update_rule`, through grok.targets), never by import, since a run folder is data.

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

import math

import torch

from grok.config import GROKFAST_FILTERS as FILTERS
from grok.config import TARGET_BEFORE, Bound, ConfigError
from grok.targets import REGISTRY, register, resolve

EPS = 1e-8  # torch's default
ORTHO_EPS = 1e-30  # ⊥Grad: added to |w|^2 and |g_orth| (as the reference implementation)


def col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-run (R,) tensor (already on like's device) shaped to broadcast over like (R, ...)."""
    return t.view(-1, *(1,) * (like.dim() - 1))


def to_device(coeffs: dict, like: torch.Tensor) -> dict:
    """Per-run coefficients, computed on the CPU in float64 as torch computes its Python-float
    scalars, moved to the parameters' device and dtype in one transfer."""
    stacked = torch.stack(list(coeffs.values())).to(like.dtype).to(like.device, non_blocking=True)
    return dict(zip(coeffs, stacked))


# -- base update rules -----------------------------------------------------------------------

RULES: dict[str, type["UpdateRule"]] = REGISTRY["optimizer"]  # by `_target_`: every UpdateRule subclass


class UpdateRule:
    """One base update over a pack. A subclass declares:

    - `HYPER`: its hyperparameters, keys of the optimizer config, each a per-run value that
      grok.config checks against its `Bound` (lr, weight_decay and warmup_steps for every rule:
      the warmup schedule is the pack's);
    - `STATE`: its per-parameter buffers, each shaped like the parameter (zeros at the start);
    - `update(params, state, hp, steps, lr)`: the update of every run at once."""

    HYPER = {"lr": Bound(0.0, math.inf), "weight_decay": Bound(0.0, math.inf, lo_open=False),
             "warmup_steps": Bound(0, integer=True)}
    STATE: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register("optimizer", cls)

    @staticmethod
    def update(params: dict, state: dict, hp: dict, steps: torch.Tensor, lr: torch.Tensor) -> None:
        """Update `params` (name -> (R, ...) parameter with its .grad) in place. `state`: buffer ->
        name -> (R, ...) tensor; `hp`: hyperparameter -> (R, ...) float64 CPU tensor; `steps`:
        (R,) updates made, this one included; `lr`: (R,) float64 learning rate of this update."""
        raise NotImplementedError


class AdamW(UpdateRule):
    """torch.optim.AdamW: decoupled weight decay, w <- w (1 - lr wd), then the Adam step."""

    HYPER = {**UpdateRule.HYPER, "betas": Bound(0, 1, lo_open=False, n=2)}
    STATE = ("exp_avg", "exp_avg_sq")
    DECOUPLED = True

    @classmethod
    def update(cls, params, state, hp, steps, lr):
        k, b1, b2, wd = steps.double(), hp["betas"][:, 0], hp["betas"][:, 1], hp["weight_decay"]
        # As torch's single-tensor Adam: Python-float (float64) scalars per run, then one cast.
        c = to_device({"decay": 1 - lr * wd, "wd": wd, "1-b1": 1 - b1, "b2": b2, "1-b2": 1 - b2,
                       "bc2_sqrt": (1 - b2 ** k).sqrt(), "-step_size": -(lr / (1 - b1 ** k))},
                      next(iter(params.values())))
        for n, w in params.items():
            g = w.grad
            m, v = state["exp_avg"][n], state["exp_avg_sq"][n]
            if cls.DECOUPLED:
                w.mul_(col(c["decay"], w))
            else:
                g = g + col(c["wd"], w) * w
            m.lerp_(g, col(c["1-b1"], w))
            v.mul_(col(c["b2"], w)).addcmul_(col(c["1-b2"], w) * g, g)
            denom = (v.sqrt() / col(c["bc2_sqrt"], w)).add_(EPS)
            w.addcmul_(m / denom, col(c["-step_size"], w))


class Adam(AdamW):
    """torch.optim.Adam: weight decay as an L2 term added to the gradient, not decoupled."""

    DECOUPLED = False


class SGD(UpdateRule):
    """torch.optim.SGD with momentum (the first buffer is the gradient) and L2 weight decay."""

    HYPER = {**UpdateRule.HYPER, "momentum": Bound(0.0, 1.0, lo_open=False)}
    STATE = ("momentum_buffer",)

    @staticmethod
    def update(params, state, hp, steps, lr):
        mom = hp["momentum"]
        plain = ((steps == 1) | (mom == 0)).double()  # torch: the first buffer is the grad
        c = to_device({"wd": hp["weight_decay"], "mom": mom, "plain": plain, "-lr": -lr},
                      next(iter(params.values())))
        for n, w in params.items():
            g = w.grad + col(c["wd"], w) * w
            buf = state["momentum_buffer"][n]
            new = torch.where(col(c["plain"], w).bool(), g, buf * col(c["mom"], w) + g)
            buf.copy_(new)
            w.addcmul_(new, col(c["-lr"], w))


def update_rule(o) -> type[UpdateRule]:
    """The rule an optimizer config names: its `_target_`, or for a config written before the key
    that of its `base` or `name` (grok.config.TARGET_BEFORE). Looked up among the registered
    rules only (nothing is imported by name); anything else is a ConfigError naming the value."""
    target = o.get("_target_")
    if target is None:
        old = o.get("base", o.get("name"))
        target = TARGET_BEFORE.get(old) if isinstance(old, str) else None
        if target is None:
            raise ConfigError(f"optimizer._target_: missing, and optimizer.name={old!r} names no "
                              f"update rule of before the key (e.g. grok.optim.AdamW)")
    return resolve("optimizer", target, "optimizer._target_")


def rule_target(rule: type[UpdateRule]) -> str:
    """The `_target_` that names `rule`."""
    return next(t for t, r in RULES.items() if r is rule)


# -- the pack optimizer: a base rule, the transforms and the per-run state ------------------

class PackOptimizer:
    """Optimizer state for named stacked parameters; hyperparameters are per-run lists.

    State per run r: `steps[r]` (updates made), and per parameter the rule's buffers (`exp_avg`/
    `exp_avg_sq` for Adam, `momentum_buffer` for SGD) and a Grokfast filter's, sliced on the run
    axis like the parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], rule: type[UpdateRule],
                 grokfast: dict | None = None, orthogonal: bool = False, **hyper):
        """`hyper`: each of the rule's HYPER keys, a list of one value per run (others are
        ignored: they must be None); `grokfast`: {"filter": "ema" or "ma", "lamb": per-run list,
        "alpha": per-run list (ema), "window": one int for the pack (ma)}; `orthogonal`: ⊥Grad
        for every run."""
        if not (isinstance(rule, type) and issubclass(rule, UpdateRule)):
            raise ValueError(f"not an update rule: {rule!r}")
        extra = [k for k, v in hyper.items() if k not in rule.HYPER and v is not None]
        if extra:
            raise ValueError(f"{rule.__name__} has no hyperparameters {extra}")
        self.params, self.rule, self.orthogonal = params, rule, bool(orthogonal)
        self.filter = grokfast["filter"] if grokfast else None
        if self.filter not in (None, *FILTERS):
            raise ValueError(f"unknown Grokfast filter {self.filter!r} (choose from {', '.join(FILTERS)})")

        def vec(values):  # hyperparameters live on the CPU in float64; cast per step
            return torch.tensor(values, dtype=torch.float64)

        self.hp = {k: vec(hyper[k]) for k in rule.HYPER}
        self.steps = torch.zeros(len(hyper["lr"]), dtype=torch.long)
        self.state = {k: {n: torch.zeros_like(w) for n, w in params.items()} for k in rule.STATE}
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
        w = self.hp["warmup_steps"]
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
        self.rule.update(self.params, self.state, self.hp, self.steps, lr)

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
        c = to_device({"alpha": self.hp["alpha"], "1-alpha": 1 - self.hp["alpha"],
                       "lamb": self.hp["lamb"], "first": (done == 0).double()},
                      next(iter(self.params.values())))
        for n, w in self.params.items():
            g, ema = w.grad, self.state["grokfast_ema"][n]
            prev = torch.where(col(c["first"], w).bool(), g, ema)
            ema.copy_(prev * col(c["alpha"], w) + g * col(c["1-alpha"], w))
            w.grad = g + ema * col(c["lamb"], w)

    def _grokfast_ma(self, done):
        """Grokfast-MA (Lee et al. 2024): g <- g + lamb * mean of the last `window` gradients
        (this one included), once a run has made `window` of them; before that g is unchanged."""
        W, like = self.window, next(iter(self.params.values()))
        c = to_device({"lamb": self.hp["lamb"], "full": (done + 1 >= W).double()}, like)
        runs = torch.arange(len(done), device=like.device)
        slot = (done % W).to(like.device)
        for n, w in self.params.items():
            g, buf = w.grad, self.state["grokfast_ma"][n]
            buf[runs, slot] = g
            mean = buf.sum(1) / W
            w.grad = torch.where(col(c["full"], w).bool(), g + mean * col(c["lamb"], w), g)

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
        new.params, new.rule, new.orthogonal = params, self.rule, self.orthogonal
        new.filter, new.window = self.filter, self.window
        cpu_keep = keep.cpu()
        new.hp = {k: v.index_select(0, cpu_keep) for k, v in self.hp.items()}
        new.steps = self.steps.index_select(0, cpu_keep)
        new.state = {k: {n: t.index_select(0, keep.to(t.device)) for n, t in s.items()}
                     for k, s in self.state.items()}
        return new
