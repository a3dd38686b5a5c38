"""Every task's examples are exactly what it says (labels checked against Python's arithmetic),
its targets sit where the model answers, and its data is a reproducible function of the seed."""

import math

import numpy as np
import pytest
import sympy
import torch
from conftest import compose_cfg

from grok.checks import check
from grok.config import ConfigError
from grok.data import batch_at, make_data
from grok.tasks import build_task

SEQUENCE_TASKS = ["digits_add", "repeat_subseq", "max_element", "sort", "gcd"]


def task_of(*overrides):
    cfg = compose_cfg(list(overrides))
    return check(cfg), cfg


def examples(name, n=300, *overrides):
    task, _ = task_of(f"task={name}", *overrides)
    tokens, targets = task.sample(n, np.random.default_rng(0))
    assert tokens.shape == targets.shape == (n, task.n_ctx)
    return task, tokens, targets


def number(digits, base=10):
    return int("".join(map(str, digits)), base) if base == 10 else sum(
        int(d) * base ** i for i, d in enumerate(reversed(digits)))


@pytest.mark.parametrize("name", SEQUENCE_TASKS)
def test_targets_only_at_declared_positions_and_within_the_output_range(name):
    task, tokens, targets = examples(name)
    outside = np.ones(task.n_ctx, dtype=bool)
    outside[list(task.positions)] = False
    assert (targets[:, outside] == -1).all()
    used = (targets[:, list(task.positions)] >= 0).any(0)
    assert used[-1] and used.mean() > 0.9, "the declared positions are the ones answers use"
    assert targets.max() < task.n_out and tokens.max() < task.vocab and tokens.min() >= 0
    assert len(task.position_names) == len(task.positions)


@pytest.mark.parametrize("n_digits,base,answer", [(5, 10, "msd_first"), (3, 7, "msd_first"),
                                                   (5, 10, "lsd_first"), (4, 7, "lsd_first")])
def test_digits_add_is_exact_addition(n_digits, base, answer):
    task, tokens, targets = examples("digits_add", 200, f"task.n_digits={n_digits}", f"task.base={base}",
                                     f"task.answer={answer}")
    n = n_digits
    for t, y in zip(tokens, targets):
        a, b = number(t[:n], base), number(t[n + 1:2 * n + 1], base)
        assert t[n] == task.PLUS and t[2 * n + 1] == task.EQ
        answer_digits = y[2 * n + 1:]                  # n+1 digits, in the task's order
        if answer == "lsd_first":
            answer_digits = answer_digits[::-1]
        assert number(answer_digits, base) == a + b
        assert (t[2 * n + 2:] == y[2 * n + 1:-1]).all()  # teacher forcing: the digits so far
    # per-digit metrics keep their meaning in either order: digit0 is the sum's leading digit
    assert task.position_names[-1 if answer == "lsd_first" else 0] == "digit0"


def test_digits_add_carry_chains_and_the_accuracy_split_by_them():
    """A sum has a carry chain when a column adding to base-1 receives a carry (4 9 + 0 1). A
    stand-in model that adds each column and carries only what the column just below generates
    (no chains) is right on exactly the sums without one."""
    cfg = compose_cfg(["task=digits_add", "task.n_train=100", "task.n_test=2000"])
    task = build_task(cfg)
    data = make_data(task, cfg)
    n = task.n

    def chained(a, b):  # by hand, from Python integers
        carry, chain = 0, False
        for i in range(n):
            col = a // 10 ** i % 10 + b // 10 ** i % 10
            chain |= carry == 1 and col == 9
            carry = int(col + carry >= 10)
        return chain

    probe = task.probe(data, "cpu")
    tokens = probe[0].tolist()
    want = [chained(number(t[:n]), number(t[n + 1:2 * n + 1])) for t in tokens]
    assert probe[2].tolist() == want and 0.1 < np.mean(want) < 0.3  # ~17% for 5 random digits

    class NoChains(torch.nn.Module):
        def logits_at(self, tok, at):
            a, b = tok[:, :n].long(), tok[:, n + 1:2 * n + 1].long()
            col = torch.cat([torch.zeros(len(tok), 1, dtype=torch.long), a + b], 1)  # (B, n+1)
            below = torch.cat([(a + b >= 10).long(), torch.zeros(len(tok), 1, dtype=torch.long)], 1)
            return torch.nn.functional.one_hot((col + below) % 10, task.n_out).float()

    m = task.measures(NoChains(), probe, True, cfg.measures)
    assert m["acc_no_carry_chain"] == 1.0 and m["acc_carry_chain"] == 0.0
    assert task.stats(data)["carry_chain_frac_test"] == pytest.approx(np.mean(want), abs=0.03)


def test_repeat_subseq_targets_are_the_predictable_repeated_tokens():
    task, tokens, targets = examples("repeat_subseq", 200)
    assert (tokens[:, -1] == task.END).all()
    for t, y in zip(tokens, targets):
        at = np.flatnonzero(y >= 0)
        assert (y[at] == t[at + 1]).all()              # next-token targets
        span = len(at) + 1
        assert task.span_min <= span <= task.span_max and (np.diff(at) == 1).all()
        b = at[0]                                      # the second copy starts at b
        copies = [a for a in range(0, b - span + 1) if (t[a:a + span] == t[b:b + span]).all()]
        assert copies, "the repeated span occurs earlier"


def test_max_element_has_one_max_and_answers_it():
    task, tokens, targets = examples("max_element", 300)
    x = tokens[:, 1:-1]
    assert (tokens[:, 0] == task.START).all() and (tokens[:, -1] == task.END).all()
    assert ((x == x.max(1, keepdims=True)).sum(1) == 1).all()
    assert (targets[:, -1] == x.max(1)).all()


@pytest.mark.parametrize("lengths", [("task.min_length=5",), ("task.min_length=2", "task.length=6")])
def test_sort_answers_the_sorted_list(lengths):
    task, tokens, targets = examples("sort", 200, *lengths)
    seen = set()
    for t, y in zip(tokens, targets):
        mid = int(np.flatnonzero(t == task.MID)[0])
        k = mid - 1
        seen.add(k)
        assert t[0] == task.START and (y >= 0).sum() == k
        assert list(y[mid:mid + k]) == sorted(t[1:mid])
        assert (t[2 * k + 2:] == task.PAD).all()
    assert len(seen) == task.length - task.min_length + 1


def test_prime_labels_and_class_balance():
    task, cfg = task_of("task=prime", "task.n_max=200", "frac=0.5")
    tokens, targets = task.universe()
    assert len(tokens) == 200
    for t, y in zip(tokens, targets):
        assert y[-1] == int(sympy.isprime(number(t[:-1])))
    stats = task.stats(make_data(task, cfg))
    primes = sum(sympy.isprime(n) for n in range(200)) / 200
    assert abs((stats["prime_frac_train"] + stats["prime_frac_test"]) / 2 - primes) < 0.05


@pytest.mark.parametrize("sampling", ["uniform", "log_uniform"])
def test_gcd_is_exact(sampling):
    task, tokens, targets = examples("gcd", 300, f"task.sampling={sampling}", "task.n_max=1000")
    w = task.w
    small = 0
    for t, y in zip(tokens, targets):
        a, b = number(t[:w]), number(t[w + 1:2 * w + 1])
        assert 1 <= a < 1000 and 1 <= b < 1000
        assert number(y[2 * w + 1:]) == math.gcd(a, b)
        small += a < 32
    # log-uniform puts about half the operands below sqrt(n_max); uniform about 3%
    assert (small > 100) == (sampling == "log_uniform")


def test_gcd_measures_accuracy_by_gcd_and_by_the_bases_primes():
    """A stand-in model that answers gcd 1 everywhere: right exactly on coprime pairs, so its
    accuracy by gcd is 1 for g = 1 and 0 elsewhere, and the coprime share is its baseline."""
    cfg = compose_cfg(["experiment=gcd", "task.n_train=400", "task.n_test=2000"])
    task = build_task(cfg)
    data = make_data(task, cfg)
    probe = task.probe(data, "cpu")
    g = probe[2]
    assert all(math.gcd(number(t[:task.w]), number(t[task.w + 1:2 * task.w + 1])) == v
               for t, v in zip(data.test[0][:200].tolist(), g[:200]))
    smooth = {v for v in range(1, 100) if set(sympy.primefactors(v)) <= {2, 5}}  # 1, 2, 4, 5, 8, 10, ..
    assert task.smooth(np.arange(1, 100)).tolist() == [v in smooth for v in range(1, 100)]

    class AnswersOne(torch.nn.Module):
        def logits_at(self, tokens, at):
            out = torch.zeros(len(tokens), len(at), task.n_out)  # a single model: (B, K, C)
            out[..., :-1, 0] = 1  # leading zeros
            out[..., -1, 1] = 1   # last digit 1
            return out

    m = task.measures(AnswersOne(), probe, True, cfg.measures)
    assert m["acc_by_gcd/1"] == 1.0 and m["acc_by_gcd/2"] == 0.0 and m["acc_by_gcd/3"] == 0.0
    assert m["acc_gcd_other"] == 0.0 and 0 < m["acc_gcd_smooth"] < 1  # gcd 1 is smooth
    stats = task.stats(data)
    assert stats["gcd1_frac_test"] == pytest.approx((g == 1).mean(), abs=0.05)
    assert 0.3 < stats["gcd1_frac_train"] < 0.9


@pytest.mark.parametrize("name", SEQUENCE_TASKS)
def test_drawn_data_is_distinct_reproducible_and_disjoint(name):
    task, cfg = task_of(f"task={name}", "task.n_train=200", "task.n_test=100")
    a, b = make_data(task, cfg), make_data(task, cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test))
    train = {bytes(r.numpy()) for r in a.train[0]}
    test = {bytes(r.numpy()) for r in a.test[0]}
    assert len(train) == 200 and len(test) == 100 and not train & test
    other = make_data(task, compose_cfg([f"task={name}", "task.n_train=200", "task.n_test=100", "seed=1"]))
    assert not torch.equal(other.train[0], a.train[0])


def test_infinite_data_draws_a_fresh_reproducible_batch_each_step():
    task, cfg = task_of("task=digits_add", "task.n_train=null", "task.batch=64")
    data = make_data(task, cfg)
    assert data.train is None and data.n_train is None
    b0, b1, again = batch_at(task, cfg, 0), batch_at(task, cfg, 1), batch_at(task, cfg, 1)
    assert b0[0].shape == (64, task.n_ctx) and b0[1].shape == (64, len(task.positions))
    assert not torch.equal(b0[0], b1[0])
    assert torch.equal(b1[0], again[0]) and torch.equal(b1[1], again[1])
    other_seed = batch_at(task, compose_cfg(["task=digits_add", "task.n_train=null", "seed=1",
                                             "task.batch=64"]), 1)
    assert not torch.equal(other_seed[0], b1[0])


def test_a_small_universe_is_drawn_whole_and_an_oversized_request_refused():
    task, cfg = task_of("task=sort", "task.n_values=2", "task.length=3", "task.min_length=3",
                        "task.n_train=5", "task.n_test=3")
    data = make_data(task, cfg)  # 8 lists of 3 bits: 5 train, the other 3 test
    rows = {bytes(r.numpy()) for r in torch.cat([data.train[0], data.test[0]])}
    assert len(rows) == 8
    with pytest.raises(ConfigError, match="task.n_train=10: with task.n_test=3, more than the 8 distinct"):
        check(compose_cfg(["task=sort", "task.n_values=2", "task.length=3", "task.min_length=3",
                              "task.n_train=10", "task.n_test=3"]))


@pytest.mark.parametrize("overrides,named", [
    (["model.n_layers=0"], "model.n_layers=0"),
    (["task=sort", "task.min_length=7", "task.length=5"], "task.min_length=7"),
    (["task=digits_add", "task.base=1"], "task.base=1"),
    (["task=digits_add", "task.n_digits=0"], "task.n_digits=0"),
    (["task=digits_add", "task.answer=backwards"], "task.answer='backwards'"),
    (["task=gcd", "task.sampling=normal"], "task.sampling='normal'"),
    (["task=repeat_subseq", "task.span_max=13", "task.length=24"], "task.span_max=13"),
    (["task=max_element", "task.n_train=0"], "task.n_train=0"),
    (["task=digits_add", "task.n_train=null", "task.batch=0"], "task.batch=0"),
    (["task=prime", "frac=0.9999"], "frac=0.9999"),
    (["task=digits_add", "model=mlp"], "model=mlp"),
    (["model.impl=tables", "model.n_layers=2"], "model.impl=tables"),
    (["model.normalization=RMS"], "model.normalization='RMS'"),
    (["model.attn_only=maybe"], "model.attn_only='maybe'"),
])
def test_bad_task_and_model_values_are_one_clear_line(overrides, named):
    with pytest.raises(ConfigError) as e:
        check(compose_cfg(overrides))
    assert named in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("target", ["os.system", "grok.tasks.nothing.Here", "grok.config.ConfigError"])
def test_a_task_target_that_is_not_a_task_class_is_refused(target):
    from omegaconf import OmegaConf

    cfg = compose_cfg(["task=digits_add"])
    OmegaConf.update(cfg, "task._target_", target, force_add=True)
    with pytest.raises(ConfigError, match=f"task._target_='{target}': not a task class"):
        check(cfg)
