"""Packs: R runs trained at once must each be the run trained alone.

The pack optimizer is torch's optimizer per run; a pack's runs have the logits, gradients, weights
and records they have alone (float64, to rounding); compaction and kill/resume change no remaining
run by a bit (float32, CPU); a run that diverges or settles early stops alone.
"""

import io
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, TINY, assert_same_run, compose_cfg, read_metrics
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from grok.optim import SGD, Adam, AdamW, PackOptimizer
from grok.runs import Run
from grok.train import Pack, run, step, train_pack

RULE = {"adamw": AdamW, "adam": Adam, "sgd": SGD}  # the update rule of each kind

BASE = ["logger=none", *TINY, "task=poly", "measures=off", "train.threads=1"]
F64 = [*BASE, "train.dtype=float64"]
VOLATILE = {"wall_time_s", "steps_per_s", "sweep_id"}
TOL = 1e-9


def settle(after):
    """Stop `after` steps once both accuracies hold 0.01: the configs given this keep both at
    >= 0.03 from step 0 (chance is 1/23), so they stop at step `after` exactly."""
    return ["grok.threshold=0.01", f"train.early_stop_after={after}"]


pytestmark = pytest.mark.usefixtures("one_thread")


def configs(base, *variants):
    return [compose_cfg([*base, *v]) for v in variants]


def summary(run_dir):
    return json.loads((Path(run_dir) / "summary.json").read_text())


def model_weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def assert_close(a, b, where="", rel=TOL):
    """Nested JSON values equal, but floats to `rel` relative (1e-12 absolute near 0); NaN == NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {set(a) ^ set(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]", rel)
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(b, (int, float)) and not isinstance(b, bool), where
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12), \
            f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def clear_freqs(rows):
    """neuron_freq is an argmax over frequencies: a neuron whose energy is split evenly between
    some (e.g. 1/66 each) gets whichever rounding favours. Compare it where it is clear (> 1/2)."""
    rows = [dict(r) for r in rows]
    for r in rows:
        if "neuron_freq" in r:
            r["neuron_freq"] = [f if v > 0.5 else None
                                for f, v in zip(r["neuron_freq"], r["neuron_freq_var_frac"])]
    return rows


def assert_like_alone(alone_dir, pack_dir):
    """A run of a pack recorded what the run trained alone recorded, to float64 rounding."""
    sa, sp = summary(alone_dir), summary(pack_dir)
    assert_close({k: v for k, v in sa.items() if k not in VOLATILE},
                 {k: v for k, v in sp.items() if k not in VOLATILE}, "summary")
    ma, mp = read_metrics(alone_dir), read_metrics(pack_dir)
    assert [r["step"] for r in ma] == [r["step"] for r in mp]
    assert_close(clear_freqs(ma), clear_freqs(mp), "metrics")
    wa, wp = model_weights(alone_dir), model_weights(pack_dir)
    assert wa.keys() == wp.keys()
    for k in wa:
        torch.testing.assert_close(wp[k], wa[k], rtol=0, atol=TOL, equal_nan=True, msg=k)


# -- 1. the pack optimizer is torch's optimizer, run by run -------------------------------------

HP = {
    "adamw": dict(lr=[1e-2, 3e-3, 5e-2], weight_decay=[1.0, 0.0, 0.1], warmup_steps=[0, 3, 5],
                  betas=[(0.9, 0.98), (0.8, 0.999), (0.5, 0.9)]),
    "adam": dict(lr=[1e-2, 3e-3, 5e-2], weight_decay=[0.0, 0.5, 1e-2], warmup_steps=[4, 0, 2],
                 betas=[(0.9, 0.98), (0.7, 0.95), (0.95, 0.999)]),
    "sgd": dict(lr=[0.1, 0.03, 0.5], weight_decay=[0.0, 0.1, 1e-3], warmup_steps=[0, 3, 5],
                momentum=[0.9, 0.0, 0.5]),
}
SHAPES = {"W": (4, 5), "b": (7,), "T": (2, 3, 2)}


def pick(hp, order):
    return {k: [v[i] for i in order] for k, v in hp.items()}


class TorchRun:
    """One run on torch's own optimizer and LambdaLR warmup: the reference."""

    def __init__(self, kind, weights, hp, r):
        self.params = {n: nn.Parameter(w.clone()) for n, w in weights.items()}
        kw = dict(lr=hp["lr"][r], weight_decay=hp["weight_decay"][r])
        ps = list(self.params.values())
        if kind == "sgd":
            self.opt = torch.optim.SGD(ps, momentum=hp["momentum"][r], **kw)
        else:
            self.opt = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[kind](
                ps, betas=hp["betas"][r], **kw)
        warm = hp["warmup_steps"][r]
        self.sched = LambdaLR(self.opt, lambda k: min(1.0, (k + 1) / warm) if warm else 1.0)

    def lr(self):
        return self.opt.param_groups[0]["lr"]

    def step(self, grads):
        for n, w in self.params.items():
            w.grad = grads[n].clone()
        self.opt.step()
        self.sched.step()


def pack_params(per_run):
    """Stacked parameters from a list of {name: tensor} (one per run)."""
    return {n: nn.Parameter(torch.stack([w[n] for w in per_run]).clone()) for n in SHAPES}


def pack_step(opt, grads):
    for n, w in opt.params.items():
        w.grad = grads[n].clone()
    opt.step()


def random_grads(R, gen):
    return {n: torch.randn(R, *s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()}


def assert_matches(opt, r, ref, atol=1e-12):
    assert abs(float(opt.lr_now()[r]) - ref.lr()) <= 1e-15
    for n, w in opt.params.items():
        torch.testing.assert_close(w.detach()[r], ref.params[n].detach(), rtol=0, atol=atol)


def assert_same_state(a, b):
    assert a.keys() == b.keys() and a["steps"] == b["steps"]
    for k in a.keys() - {"steps"}:
        assert a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k])


def make_pack_opt(kind, params, hp):
    extra = {"momentum": hp["momentum"]} if kind == "sgd" else {"betas": hp["betas"]}
    return PackOptimizer(params, RULE[kind], lr=hp["lr"], weight_decay=hp["weight_decay"],
                         warmup_steps=hp["warmup_steps"], **extra)


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_pack_optimizer_is_torch_optimizer_per_run_and_its_state_moves_with_the_run(kind):
    """float64: each run's update, warmup lr and state are torch's for that run's hyperparameters,
    also after a round trip of run states through a checkpoint into a reordered pack that holds
    a fresh run beside resumed ones (different step counts), and after compaction (`select`)."""
    gen = torch.Generator().manual_seed(0)
    hp, R = HP[kind], 3
    init = [{n: torch.randn(*s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()}
            for _ in range(R)]
    P = make_pack_opt(kind, pack_params(init), hp)
    refs = [TorchRun(kind, init[r], hp, r) for r in range(R)]
    for _ in range(8):
        g = random_grads(R, gen)
        for r in range(R):
            assert_matches(P, r, refs[r])
            refs[r].step({n: t[r] for n, t in g.items()})
        pack_step(P, g)
    for r in range(R):
        assert_matches(P, r, refs[r])
        assert int(P.steps[r]) == 8
    assert max((P.params["W"][r] - init[r]["W"]).abs().max() for r in range(R)) > 1e-3  # it moved

    # Checkpoint the runs' states, resume runs 2 and 0 (in that order) beside a fresh run 1.
    states = []
    for r in range(R):
        buf = io.BytesIO()
        torch.save(P.run_state(r), buf)
        buf.seek(0)
        states.append(torch.load(buf, weights_only=True))
    now = [{n: P.params[n].detach()[r].clone() for n in SHAPES} for r in range(R)]
    Q = make_pack_opt(kind, pack_params([now[2], now[0], init[1]]), pick(hp, [2, 0, 1]))
    Q.load_run_state(0, states[2])
    Q.load_run_state(1, states[0])
    assert Q.steps.tolist() == [8, 8, 0]
    assert_same_state(Q.run_state(0), states[2])
    fresh = TorchRun(kind, init[1], hp, 1)

    def step_all(S=None):
        g = random_grads(R, gen)
        for r in range(R):
            refs[r].step({n: t[r] for n, t in g.items()})
        fresh.step({n: t[1] for n, t in g.items()})
        pack_step(P, g)
        pack_step(Q, {n: t[[2, 0, 1]] for n, t in g.items()})
        if S is not None:
            pack_step(S, {n: t[[1, 2]] for n, t in g.items()})

    for _ in range(3):
        step_all()
    # Compaction of Q, whose runs are at different steps, to its runs 2 (fresh) and 0 (P's 2).
    keep = torch.tensor([2, 0])
    S = Q.select(keep, {n: nn.Parameter(w.detach().index_select(0, keep)) for n, w in Q.params.items()})
    assert S.steps.tolist() == [3, 11]
    for _ in range(3):
        step_all(S)
    for r in range(R):
        assert_matches(P, r, refs[r])
    for j, ref in enumerate([refs[2], refs[0], fresh]):
        assert_matches(Q, j, ref)
    for j, ref in enumerate([fresh, refs[2]]):
        assert_matches(S, j, ref)
    assert Q.steps.tolist() == [14, 14, 6] and S.steps.tolist() == [6, 14]
    # a moved run computes exactly what it computes in place
    for (a, i), (b, k) in [((Q, 0), (P, 2)), ((Q, 1), (P, 0)), ((S, 0), (Q, 2)), ((S, 1), (Q, 0))]:
        assert all(torch.equal(a.params[n][i], b.params[n][k]) for n in SHAPES)
        assert_same_state(a.run_state(i), b.run_state(k))


# -- 2. each run of a pack is the run alone ------------------------------------------------------

def test_pack_step_gives_each_run_its_own_logits_gradients_and_weights(tmp_path):
    """Pack and step at the lowest level: 3 runs (other ops, fracs, seeds, lr, weight decay,
    betas, warmup) in one pack, 20 steps, against each run as a pack of its own (float64)."""
    cfgs = configs(F64, ["op=x-y", "frac=0.3", "seed=0"],
                   ["op=x2+xy+y2", "frac=0.5", "seed=1", "optimizer.lr=1e-2", "optimizer.weight_decay=0.3"],
                   ["op=xy", "frac=0.4", "seed=2", "optimizer.warmup_steps=0", "optimizer.betas=[0.8,0.99]"])
    cpu, f64 = torch.device("cpu"), torch.float64
    pack = Pack([Run(c, tmp_path / f"pack{i}", cpu, f64) for i, c in enumerate(cfgs)], cpu, f64)
    alone = [Pack([Run(c, tmp_path / f"alone{i}", cpu, f64)], cpu, f64) for i, c in enumerate(cfgs)]
    n = pack.train.n.tolist()
    assert len(set(n)) == 3 and pack.train.tokens.shape[1] == max(n)  # padding is exercised
    assert (pack.train.targets[0, n[0]:] == -1).all()

    def close(a, b):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)

    for _ in range(20):
        logits, test_logits = pack.model(pack.train.tokens), pack.model(pack.test.tokens)
        losses = step(pack.model, pack.opt, pack.train)
        for i, a in enumerate(alone):
            assert a.train.n.tolist() == [n[i]]
            nt = int(a.test.n[0])
            close(logits[i, :n[i]], a.model(a.train.tokens)[0, :n[i]])
            close(test_logits[i, :nt], a.model(a.test.tokens)[0, :nt])
            close(losses[i], step(a.model, a.opt, a.train)[0])
            for name, w in pack.model.named_parameters():
                wa = getattr(a.model, name)
                close(w.grad[i], wa.grad[0])
                close(w.detach()[i], wa.detach()[0])
    assert pack.opt.steps.tolist() == [20] * 3
    assert not torch.allclose(logits[0, :5], logits[1, :5])  # the runs are different runs


def test_pack_records_what_each_run_records_alone(tmp_path):
    """train_pack vs run, with the default progress measures: every metric row (measure keys
    included), summary and final weight of each run to 1e-9, float64. One run settles and stops
    early inside the pack (at step 20 of 60); the others go on."""
    cfgs = configs([*F64, "measures=default"],
                   ["op=x-y", "frac=0.3", "seed=0"],
                   ["op=x+y", "frac=0.5", "seed=1", "optimizer.lr=1e-2", "optimizer.weight_decay=0.3",
                    "measures.key_freqs=[1,3]"],
                   ["op=xy", "frac=0.4", "seed=3", *settle(20)],
                   ["op=x2+xy+y2", "frac=0.4", "seed=2"])
    got = train_pack(cfgs, [tmp_path / f"pack{i}" for i in range(4)])
    for i, c in enumerate(cfgs):
        run(c, tmp_path / f"alone{i}")
        assert_like_alone(tmp_path / f"alone{i}", tmp_path / f"pack{i}")
        assert got[i] == summary(tmp_path / f"pack{i}")
    assert [s["steps"] for s in got] == [60, 60, 20, 60]
    assert [s["early_stopped"] for s in got] == [False, False, True, False]
    rows = read_metrics(tmp_path / "pack2")
    assert [r["step"] for r in rows] == [0, 10, 20] and "key_freqs" in rows[-1]  # full set at its end
    assert "excluded_loss" in read_metrics(tmp_path / "pack1")[0]  # fixed key freqs: from step 0


# -- 3. compaction ------------------------------------------------------------------------------

# (r0 that goes on, r1 that settles at step 40, and s0, s1 that settle at step 20)
COMPACTION = {
    # The settling runs' fracs lie within r0's and r1's: a pack of just r0 and r1 pads its
    # examples to the same lengths, so it must match too (padding changes float32 rounding).
    "inside": [["op=x-y", "frac=0.3", "seed=0", "optimizer.weight_decay=0.5"],
               ["op=x2+y2", "frac=0.5", "seed=1"],
               ["op=xy", "frac=0.4", "seed=3"], ["op=x2+xy+y2", "frac=0.3", "seed=2"]],
    # s0 and s1 hold the most train and the most test examples: compaction must keep the padding.
    "outside": [["op=x-y", "frac=0.3", "seed=0", "optimizer.weight_decay=0.5"],
                ["op=x2+y2", "frac=0.4", "seed=1"],
                ["op=xy", "frac=0.5", "seed=3"], ["op=x2+xy+y2", "frac=0.2", "seed=2"]],
}


@pytest.mark.parametrize("fracs", COMPACTION)
def test_compaction_changes_no_remaining_run_by_a_bit(tmp_path, monkeypatch, fracs):
    """float32: a pack of 4 where s0 and s1 settle at step 20 and r1 at step 40 compacts twice
    (half of it stopped), to r0 and r1, then to r0 alone; every run ends bit for bit as in the
    same pack never compacted (and, "inside", r0 and r1 as in a pack of just those 2)."""
    r0, r1, s0, s1 = COMPACTION[fracs]
    cfgs = configs(BASE, r0, [*r1, *settle(40)], [*s0, *settle(20)], [*s1, *settle(20)])
    calls = []
    compact = Pack.compact

    def spy(self, keep):
        before = self.train.tokens.shape
        compact(self, keep)
        calls.append((list(keep), [r.step for r in self.runs], before, self.train.tokens.shape))

    monkeypatch.setattr(Pack, "compact", spy)
    got = train_pack(cfgs, [tmp_path / f"A{i}" for i in range(4)])
    assert [s["steps"] for s in got] == [60, 40, 20, 20]
    assert [s["early_stopped"] for s in got] == [False, True, True, True]
    # after the (discarded) step of the runs that stopped; the padded length kept
    [(keep1, steps1, before1, after1), (keep2, steps2, before2, after2)] = calls
    assert keep1 == [0, 1] and steps1 == [21, 21] and after1 == (2, *before1[1:]) and before1[0] == 4
    assert keep2 == [0] and steps2 == [41] and before2 == after1 and after2 == (1, *before1[1:])

    monkeypatch.setattr(Pack, "compact", lambda self, keep: calls.append("none"))
    train_pack(cfgs, [tmp_path / f"N{i}" for i in range(4)])
    assert calls[2:] == ["none", "none"]
    for i in range(4):
        assert_same_run(tmp_path / f"N{i}", tmp_path / f"A{i}")
    if fracs == "inside":
        monkeypatch.setattr(Pack, "compact", compact)
        train_pack(cfgs[:2], [tmp_path / f"B{i}" for i in range(2)])
        for i in range(2):
            assert_same_run(tmp_path / f"B{i}", tmp_path / f"A{i}")


# -- 4. kill and resume -------------------------------------------------------------------------

TRAIN_PACK = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from hydra import compose, initialize_config_dir
from grok.train import train_pack
overrides, dirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
with initialize_config_dir({str(CONF)!r}, version_base="1.3"):
    cfgs = [compose("config", overrides=o) for o in overrides]
train_pack(cfgs, dirs)
"""

KILL_BASE = [*BASE, "train.steps=400", "train.eval_every=50", "train.checkpoint_every=100"]
# r0 checkpoints every 100 steps and r1 every 70, so killed they resume from different steps (and
# the one ahead finishes first: the pack compacts to the other alone). s settles and is done at
# step 100, before the kill. s's frac lies within r0's and r1's, so the relaunched pack (without
# s) pads their examples to the same lengths as the first launch did: a relaunch pads to the
# runs it holds, and padding changes float32 rounding.
KILL_RUNS = [["op=x-y", "frac=0.3", "seed=0"],
             ["op=x+y", "frac=0.5", "seed=1", "train.checkpoint_every=70"],
             ["op=xy", "frac=0.4", "seed=3", *settle(100)]]


def test_killed_pack_resumes_bit_identical(tmp_path):
    """SIGKILL a pack mid-run (after the runs' checkpoints, which are at different steps, with
    metric rows logged past them, and one run already finished) and relaunch it: every run ends
    bit for bit as in the pack never interrupted."""
    overrides = [[*KILL_BASE, *v] for v in KILL_RUNS]
    cfgs = [compose_cfg(o) for o in overrides]
    R = len(cfgs)
    ref = train_pack(cfgs, [tmp_path / f"ref{i}" for i in range(R)])
    assert [s["steps"] for s in ref] == [400, 400, 100] and ref[2]["early_stopped"]

    dirs = [tmp_path / f"run{i}" for i in range(R)]
    log = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_PACK, json.dumps(overrides),
                             json.dumps([str(d) for d in dirs])], stdout=log, stderr=log)
    metrics = dirs[0] / "metrics.jsonl"
    deadline = time.time() + 240
    try:
        while True:  # r0: checkpoint at 100 and a row at 150, past it; s: done at 100
            if ('{"step": 150,' in (metrics.read_text() if metrics.exists() else "")
                    and (dirs[2] / "summary.json").exists()
                    and all((d / "checkpoint.pt").exists() for d in dirs)):
                break
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.time() < deadline, "the pack made no progress"
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)  # at once, so that it cannot get past the next checkpoint
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert not any((d / "summary.json").exists() for d in dirs[:2]), "finished before the kill"
    at = [torch.load(d / "checkpoint.pt", weights_only=True)["step"] for d in dirs]
    assert 100 <= at[0] < 400 and 70 <= at[1] < 400 and at[0] != at[1] and at[2] == 100
    assert rows[-1]["step"] > at[0]  # rows past the checkpoint, to be dropped
    done_mtime = (dirs[2] / "checkpoint.pt").stat().st_mtime_ns

    got = train_pack(cfgs, dirs)
    for i in range(R):
        assert_same_run(tmp_path / f"ref{i}", dirs[i])
        assert got[i] == summary(dirs[i])
    assert [s["resumed_from"] for s in got] == [at[0], at[1], None]
    assert (dirs[2] / "checkpoint.pt").stat().st_mtime_ns == done_mtime  # finished: not trained again
    assert train_pack(cfgs, dirs) == got  # a finished pack relaunched is a no-op


# -- 5. divergence ------------------------------------------------------------------------------

def test_a_diverging_run_stops_alone_and_the_others_are_untouched(tmp_path):
    """One run of 3 with lr 1e30 turns its loss NaN by step 10; it stops and says so, the others
    (sharing every batched op with its NaN weights for 50 more steps) end as they do alone."""
    cfgs = configs(F64, ["op=x-y", "frac=0.3", "seed=0"],
                   ["op=x+y", "frac=0.4", "seed=1", "optimizer.lr=1e30"],
                   ["op=xy", "frac=0.5", "seed=2"])
    got = train_pack(cfgs, [tmp_path / f"pack{i}" for i in range(3)])
    assert got[1]["diverged"] and got[1]["steps"] == 10 and math.isnan(got[1]["final_train_loss"])
    assert not got[0]["diverged"] and not got[2]["diverged"]
    assert got[0]["steps"] == got[2]["steps"] == 60
    for i, c in enumerate(cfgs):
        run(c, tmp_path / f"alone{i}")
        assert_like_alone(tmp_path / f"alone{i}", tmp_path / f"pack{i}")
    for i in (0, 2):
        assert all(math.isfinite(r["train_loss"]) for r in read_metrics(tmp_path / f"pack{i}"))
        assert all(torch.isfinite(w).all() for w in model_weights(tmp_path / f"pack{i}").values())


# -- 6. a pack of one ---------------------------------------------------------------------------

def test_a_pack_of_one_is_run_and_a_run_is_itself_in_any_pack(tmp_path):
    """train_pack([cfg]) is run(cfg), bit for bit (float32); so is cfg in a pack of 3 whose other
    runs have as many examples (the same padded length), and in the same pack after they stop."""
    cfg = compose_cfg([*BASE, "op=x-y", "measures=default"])
    [packed] = train_pack([cfg], [tmp_path / "pack"])
    alone = run(cfg, tmp_path / "alone")
    assert_same_run(tmp_path / "alone", tmp_path / "pack")
    assert {k: v for k, v in packed.items() if k not in VOLATILE} == \
        {k: v for k, v in alone.items() if k not in VOLATILE}
    others = configs(BASE, ["op=x2+xy+y2", "seed=2", *settle(20)], ["op=x+y", "seed=1", "optimizer.lr=1e-2"])
    for name, cfgs, at in (("first", [cfg, *others], 0), ("last", [*others, cfg], 2)):
        got = train_pack(cfgs, [tmp_path / f"{name}{i}" for i in range(3)])
        assert [s["steps"] for s in got] == ([60, 20, 60] if at == 0 else [20, 60, 60])
        assert_same_run(tmp_path / "alone", tmp_path / f"{name}{at}")


def test_a_pack_refuses_runs_of_other_shapes(tmp_path):
    cfg = compose_cfg(BASE)
    for other in (["p=29"], ["optimizer=sgd"], ["train.dtype=float64"], ["model.d_mlp=32"]):
        with pytest.raises(ValueError, match="must share"):
            train_pack([cfg, compose_cfg([*BASE, *other])], [tmp_path / "x", tmp_path / "y"])
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_a_relaunched_pack_pads_as_before_when_its_longest_run_has_finished(tmp_path, monkeypatch):
    """The run with the most examples stops early; the pack is killed after a later checkpoint
    and relaunched without it. The survivor must pad as before (its checkpoint says how far):
    padding changes no value, but a longer sum rounds differently in float32."""
    base = ["logger=none", *TINY, "task=poly", "measures=off"]
    cfgs = [compose_cfg([*base, "op=x-y", "frac=0.3"]),
            compose_cfg([*base, "op=xy", "frac=0.5", "seed=3", *settle(20)])]
    train_pack(cfgs, [tmp_path / "ref_r", tmp_path / "ref_s"])
    save = Pack.save

    def save_then_die(self, i, done=False):  # as a SIGKILL right after r's step-40 checkpoint
        save(self, i, done)
        if self.runs[i].step == 40:
            raise KeyboardInterrupt

    monkeypatch.setattr(Pack, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_pack(cfgs, [tmp_path / "r", tmp_path / "s"])
    monkeypatch.setattr(Pack, "save", save)
    assert summary(tmp_path / "s")["early_stopped"] and not (tmp_path / "r" / "summary.json").exists()
    train_pack(cfgs, [tmp_path / "r", tmp_path / "s"])
    assert summary(tmp_path / "r")["resumed_from"] == 40
    assert_same_run(tmp_path / "ref_r", tmp_path / "r")


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_forward_changes_no_run_by_a_bit(tmp_path, chunk):
    """A CPU pack runs its forward and backward a few runs at a time (cache-sized chunks); the
    runs' records and weights are those of the whole pack in one forward, bit for bit."""
    base = ["logger=none", *TINY, "task=poly", "measures=default", "measures.full_every=2"]
    variants = [["op=x+y", "frac=0.5"], ["op=x-y", "frac=0.7", "seed=1"],
                ["op=xy", "frac=0.3", "seed=2", *settle(20)]]
    whole = [compose_cfg([*base, *v, "train.chunk=8"]) for v in variants]
    parts = [compose_cfg([*base, *v, f"train.chunk={chunk}"]) for v in variants]
    train_pack(whole, [tmp_path / f"whole{i}" for i in range(3)])
    train_pack(parts, [tmp_path / f"part{i}" for i in range(3)])
    for i in range(3):
        assert_same_run(tmp_path / f"whole{i}", tmp_path / f"part{i}")
    assert summary(tmp_path / "part2")["early_stopped"]


# -- 6. other tasks pack too --------------------------------------------------------------------

SMALL_MODEL = ["model.d_model=32", "model.d_head=8", "model.d_mlp=64", "train.steps=30",
               "train.eval_every=10", "train.early_stop_after=null"]


@pytest.mark.parametrize("task,variants", [
    # drawn data of different sizes (padding), a 2-layer attention-only model with measures
    (["task=repeat_subseq", "model=attn_only", "model.n_layers=2", "task.length=12",
      "task.span_max=5", "measures=default"],
     [["task.n_train=64", "seed=0"], ["task.n_train=96", "seed=1", "optimizer.lr=3e-3"]]),
    # infinite data: each run draws its own batch every step
    (["task=digits_add", "task.n_digits=3", "task.n_train=null", "task.batch=32", "task.n_test=50"],
     [["seed=0"], ["seed=1", "optimizer.weight_decay=0.1"], ["seed=2"]]),
])
def test_runs_of_other_tasks_pack_as_they_run_alone(tmp_path, task, variants):
    base = ["logger=none", "train.threads=1", "train.dtype=float64", "measures=off", *SMALL_MODEL, *task]
    cfgs = configs(base, *variants)
    train_pack(cfgs, [tmp_path / f"pack{i}" for i in range(len(cfgs))])
    for i, c in enumerate(cfgs):
        run(c, tmp_path / f"alone{i}")
        assert_like_alone(tmp_path / f"alone{i}", tmp_path / f"pack{i}")
    rows = read_metrics(tmp_path / "pack0")
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert len({r["train_loss"] for r in rows}) == 4
