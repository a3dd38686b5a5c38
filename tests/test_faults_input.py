"""Nothing run that should not be: every input of items 3, 6 and 8 of "Nothing lost, nothing run
that should not be" stops before anything is written, with one line naming it and exit status 2.

Each case below failed on 7461b24 (hung, ended in a traceback, trained a meaningless op, or
passed the check and failed after writing a folder) unless marked "already refused"; the
subprocess timeouts make a regression to a hang fail instead of stalling the suite.
Imports of what the fix added stay inside the tests, so this file also runs against old code.
"""

import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, compose_cfg, launch

DEEP = "(" * 250 + "x+y" + ")" * 250
M89 = 618970019642690137449562111  # 2^89 - 1, a Mersenne prime

# (command line, text the error line must contain)
REFUSED = [
    # item 3: large p
    (["task=div", f"p={M89}"], f"p={M89}"),                          # hung (trial division)
    (["p=100003"], "p=100003"),                                       # traceback (74 GB array)
    (["p=1099511627776"], "p=1099511627776"),                         # 2^40: traceback
    (["p=2147483647"], "p=2147483647"),                               # 5.7 GB, then traceback
    (["p=10007"], "p=10007"),                                         # passed: 5.6 GB, 24 s a job
    (["p=1000"], "train.max_memory_gb=16"),                           # passed; needs ~57 GB
    # item 6: ops meaningless mod p
    (["task=poly", "op=23x+23y", "p=23"], "op=23x+23y: constant mod p=23 (every label is 0)"),
    (["task=poly", "op=x23-x+y", "p=23"], "op=x23-x+y: does not depend on x mod p=23"),
    (["task=poly", "op=x+y23-y", "p=23"], "op=x+y23-y: does not depend on y mod p=23"),
    (["task=poly", "op=x5-x", "p=5"], "constant mod p=5"),
    (["task=div", "p=2"], "op=x/y: does not depend on y mod p=2"),  # x/1 is x
    # item 8: bad input past the check
    (["task=poly", f"op='{DEEP}'"], "nested more than 50 deep"),     # 3,000-line traceback
    (["~p"], "p: missing"),                                           # traceback
    (["~train.steps"], "train.steps: missing"),                       # traceback
    (["~grok"], "grok: missing"),                                     # traceback
    ([f"seed={2**64}"], f"seed={2**64}"),                             # passed; torch refuses it
    ([f"seed={2**63}"], f"seed={2**63}"),
    (["optimizer.betas=[2,3]"], "optimizer.betas=[2, 3]"),
    (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum=-1"),
    (["optimizer=sgd", "optimizer.momentum=1.0"], "optimizer.momentum=1.0"),
    (["model.d_mlp=1e9"], "model.d_mlp=1000000000.0"),                # already refused (a float)
    (["model.d_mlp=1000000000"], "d_mlp=1000000000"),                 # passed; 10^5 GB
    (["model.n_heads=100000"], "n_heads=100000"),
    (["model.pos_embed=banana"], "model.pos_embed='banana'"),         # silently accepted
    (["+fracc=0.3"], "fracc=0.3: unknown key"),                       # silently accepted
    (["measures.key_freqs=[]"], "measures.key_freqs=[]"),             # silently accepted
    (["train.device=banana"], "train.device='banana'"),               # already refused
    (["train.threads=-1"], "train.threads=-1"),                       # already refused
]
if not torch.cuda.is_available():
    REFUSED.append((["train.device=cuda"], "train.device='cuda'"))    # already refused


# One case per kind of check goes through a real `launch.py --dry-run` (a subprocess, ~3 s each);
# every case is checked in process by launch.check, the batch check the launchers run.
THROUGH_CLI = {0, 5, 6, 11, 16, 23}


@pytest.mark.parametrize("args,named", REFUSED, ids=[" ".join(a)[:60] for a, _ in REFUSED])
def test_refused_up_front_in_one_line(args, named):
    from launch import check

    start = time.perf_counter()
    error, _ = check(list(args))
    assert error is not None and named in error and "\n" not in error, (args, error)
    assert time.perf_counter() - start < 30  # a hang (trial division, a huge table) fails here


@pytest.mark.parametrize("args,named", [REFUSED[i] for i in sorted(THROUGH_CLI)],
                         ids=[" ".join(REFUSED[i][0])[:60] for i in sorted(THROUGH_CLI)])
def test_refused_up_front_one_line_exit_2_nothing_written(tmp_path, args, named):
    r = launch(["--dry-run", *args], cwd=tmp_path, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert named in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["+fracc=0.3"], ["~p"], ["task=poly", "op=23x+23y", "p=23"], ["model.pos_embed=banana"],
    ["optimizer.betas=[2,3]"], ["measures.key_freqs=[]"], [f"seed={2**64}"],
    ["-m", "seed=0,1", "+fracc=0.3"],
], ids=" ".join)
def test_a_real_launch_writes_nothing_either(tmp_path, args):
    """Without --dry-run: these trained (and wrote outputs/) or failed after writing a folder."""
    tiny = [a for a in TINY if not a.startswith("p=")]  # (p=23 after ~p would be an error of its own)
    r = launch([*args, *tiny, "logger=none"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert not (tmp_path / "outputs").exists() and list(tmp_path.iterdir()) == []


def test_more_bad_values_one_line_each():
    """In process (fast): every kind of bad value is one ConfigError line naming it."""
    from launch import check

    cases = {
        ("train=5",): "train=5: must be a group of keys",
        ("~model",): "model.name: missing",
        ("~optimizer.betas",): "optimizer.betas: missing",
        ("~sweep_id",): "sweep_id: missing",
        ("p=???",): "p=???",
        ("op='${nope}'",): "op=${nope}",
        ("seed=true",): "seed=True",
        ("seed=1.0",): "seed=1.0",
        ("frac=true",): "frac=True",
        ("train.steps=1e5",): "train.steps=100000.0",
        ("train.threads=100000",): "train.threads=100000",
        ("optimizer.betas=[0.9]",): "optimizer.betas=[0.9]",
        ("optimizer.betas=0.9",): "optimizer.betas=0.9",
        ("+optimizer.momentum=0.9",): "optimizer.momentum=0.9: unknown key",
        ("optimizer=sgd", "optimizer.betas=[0.9,0.9]"): "optimizer.betas",
        ("model.mlp_bias=1",): "model.mlp_bias=1",
        ("model.impl=fast",): "model.impl='fast'",
        ("measures.key_freqs=[1,1]",): "measures.key_freqs=[1, 1]",
        ("measures.key_freqs=[0]",): "measures.key_freqs=[0]",
        ("logger.project=null",): "logger.project=None",
        ("train.max_memory_gb=0",): "train.max_memory_gb=0",
        ("+model.extra=1",): "model.extra=1: unknown key",
    }
    for args, named in cases.items():
        error, n = check(list(args))
        assert error is not None and named in error and "\n" not in error, (args, error)


@pytest.mark.parametrize("args", [
    ["optimizer=sgd"], ["optimizer=adam", "model=furuta"], ["logger=none"], ["measures=off"],
    ["measures.key_freqs=[1,3]"], ["task=poly", "op=x/y", "p=97"], ["task=div", "p=3"],
    [f"seed={2**63 - 1}"], ["p=2"], ["p=1000", "train.max_memory_gb=null"],
    ["task=poly", "op=x22+y", "p=23"], ["task=poly", f"op='{'(' * 50}x+y{')' * 50}'"],
    ["-m", "experiment=exponents", "p=113"],
], ids=" ".join)
def test_good_configs_still_pass(args):
    """Config groups that add keys (sgd's momentum) are not unknown keys; limits are inclusive."""
    from launch import check

    assert check(args)[0] is None


def test_furuta_table_checks_each_op_once_and_fast():
    from grok.ops import _learnability
    from launch import check

    _learnability.cache_clear()
    t = time.perf_counter()
    assert check(["-m", "experiment=furuta_table"]) == (None, 735)
    assert time.perf_counter() - t < 60  # ~5 s on a shared 2-core machine
    assert _learnability.cache_info().misses == 35  # 35 ops at one p, 735 jobs


# -- the op language ---------------------------------------------------------------------------

def test_deep_parentheses_are_one_line_not_a_recursion_error():
    from grok.ops import MAX_NESTING, OpError, parse_op

    ok = "(" * MAX_NESTING + "x+y" + ")" * MAX_NESTING
    assert parse_op(ok).canonical == "x+y"
    for text in ("(" + ok + ")", DEEP, "(" * 100_000):
        with pytest.raises(OpError, match="nested more than") as err:
            parse_op(text)
        assert "\n" not in str(err.value)


def test_op_size_limit():
    from grok.ops import MAX_CHARS, OpError, parse_op

    with pytest.raises(OpError, match=f"at most {MAX_CHARS}") as err:
        parse_op("x+" * MAX_CHARS + "y")
    assert len(str(err.value)) < 200
    t = time.perf_counter()
    parse_op("x+" * (MAX_CHARS // 2 - 1) + "y")  # the longest accepted: well under a second
    assert time.perf_counter() - t < 5


def test_primality_is_exact_and_fast_for_huge_numbers():
    """In a subprocess with a timeout: trial division would never end."""
    code = ("from grok.ops import _is_prime as q; "
            f"print(q({M89}), q({M89 * 3}), q(2**64 + 1), q(2**127 - 1), q(3215031751))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.split() == ["True", "False", "False", "True", "False"], r.stderr[-2000:]
    # (3215031751 is a strong pseudoprime to the bases 2, 3, 5 and 7)
    from grok.ops import MAX_P, OpError, parse_op

    with pytest.raises(OpError, match=f"at most {MAX_P}"):
        parse_op("x/y").check_p(M89)
    parse_op("x/y").check_p(2039)
    with pytest.raises(OpError, match="composite"):
        parse_op("x/y").check_p(2047)  # 23 * 89


def brute(op, p):
    """(constant, depends on x, depends on y) from the labels, by plain Python."""
    x, y, z = (a.tolist() for a in op.labels(p))
    table = dict(zip(zip(x, y), z))
    by_y, by_x = {}, {}
    for (a, b), v in table.items():
        by_y.setdefault(b, set()).add(v)
        by_x.setdefault(a, set()).add(v)
    return (len(set(z)) == 1, any(len(s) > 1 for s in by_y.values()),
            any(len(s) > 1 for s in by_x.values()))


@pytest.mark.parametrize("text", ["x+y", "23x+23y", "x23-x+y", "x+y23-y", "x^22", "x^22+y^22",
                                  "xy", "x^23y-xy+1", "x/y", "x/(x+y)", "(x+1)/y", "(x^23-x)/y",
                                  "y/(x-x^23+1)", "x^2y^2", "2x", "(x+y)^23-x^23-y^23"])
@pytest.mark.parametrize("p", [2, 3, 5, 23])
def test_learnable_agrees_with_brute_force(text, p):
    from grok.ops import OpError, parse_op

    op = parse_op(text)
    try:
        const, dx, dy = brute(op, p)
    except OpError:  # nothing to label
        with pytest.raises(OpError, match="nothing to label"):
            op.check_learnable(p)
        return
    if const or not dx or not dy:
        with pytest.raises(OpError) as err:
            op.check_learnable(p)
        need = "constant" if const else "does not depend on x" if not dx else "does not depend on y"
        assert need in str(err.value) and f"p={p}" in str(err.value)
    else:
        assert op.check_learnable(p) == len(op.labels(p)[2])


def test_labels_command_refuses_huge_p_quickly():
    for p, needle in ((M89, "at most 2048"), (100003, "at most 2048"), (2047, "composite")):
        r = subprocess.run([sys.executable, "-m", "analysis", "labels", "x/y", "--p", str(p)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and needle in lines[0], r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "analysis", "labels", "x+y", "--p", "7", "--frac", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "error: frac=1.0 leaves an empty train or test set of the 49 pairs"]


# -- keys and memory ---------------------------------------------------------------------------

def test_check_keys_compares_with_the_groups_own_config():
    from grok.config import ConfigError, check_keys

    ref = compose_cfg(["optimizer=sgd"])
    check_keys(compose_cfg(["optimizer=sgd", "seed=3"]), ref)
    with pytest.raises(ConfigError, match="did you mean frac"):
        check_keys(compose_cfg(["+fracc=0.3"]), compose_cfg())
    with pytest.raises(ConfigError, match="optimizer.momentum: missing"):
        check_keys(compose_cfg(["optimizer=adamw"]), ref)  # adamw's keys are not sgd's


def test_dtype_bytes_are_torchs():
    from grok.hardware import DTYPE_BYTES, torch_dtype

    assert DTYPE_BYTES == {k: torch_dtype(k).itemsize for k in DTYPE_BYTES}


def test_memory_estimate_grows_like_p_cubed():
    from grok.config import memory_estimate

    def peak(p):
        parts = memory_estimate(compose_cfg([f"p={p}", "measures=off"]), p * p)
        return parts["weights"] + parts["data"] + max(parts["train"], parts["test"])

    assert 6 < peak(800) / peak(400) < 9



def test_memory_estimate_counts_grokfast_state_and_a_mixtures_op_tokens():
    """Grokfast-MA keeps its last `window` gradients (window 100: 25x an AdamW run's weights part
    at 4 copies), so a run that fits with AdamW can be refused with it; a mixture's op tokens
    widen the embedding."""
    from grok.checks import check
    from grok.config import ConfigError, memory_estimate
    from hydra_plugins.grok_launchers.packed_launcher import run_bytes

    def weights(*o):
        c = compose_cfg(["p=97", *o])
        return memory_estimate(c, c.p * c.p)["weights"], run_bytes(c, check(c))

    (adamw, adamw_run), (ema, _), (ma, ma_run) = (weights(), weights("optimizer=grokfast_ema"),
                                                  weights("optimizer=grokfast_ma"))
    assert ema * 4 == adamw * 5 and ma * 4 == adamw * 104
    assert 0.95 < (ma_run - adamw_run) / (ma - adamw) < 1.05  # the packed launcher counts them too
    c = compose_cfg(["p=97"])
    assert memory_estimate(c, 2 * 97 * 97, vocab=97 + 1 + 2)["weights"] > adamw
    tight = ["p=97", "train.max_memory_gb=0.2"]
    check(compose_cfg(tight))
    with pytest.raises(ConfigError, match="mostly weights"):
        check(compose_cfg([*tight, "optimizer=grokfast_ma", "optimizer.grokfast.window=2000"]))

MEASURE = """
import json, re, sys, tempfile
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from conftest import compose_cfg
from grok.config import memory_estimate
from grok.train import run

def peak():  # this process's own peak RSS (ru_maxrss would carry the parent's over fork and exec)
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read())[1]) * 1024

cfg = compose_cfg({overrides!r})
parts = memory_estimate(cfg, cfg.p * cfg.p)
before = peak()
with tempfile.TemporaryDirectory() as d:
    run(cfg, d)
used = peak() - before
est = parts["weights"] + parts["data"] + max(parts["train"], parts["test"], parts["measures"])
print(json.dumps([used, est]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_estimate_is_above_a_measured_run_and_not_far():
    """Peak RSS of a 2-step run whose test forward dominates, less that of the process before."""
    import json

    overrides = ["logger=none", "p=211", "frac=0.5", "measures=off", "train.steps=2",
                 "train.eval_every=1", "train.early_stop_after=null"]
    code = MEASURE.format(root=str(ROOT), overrides=overrides)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    used, est = json.loads(r.stdout.strip().splitlines()[-1])
    assert used > 100 * 2**20  # the run itself, not noise
    assert used <= est <= 2.5 * used, (used, est)
