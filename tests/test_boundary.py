"""The boundary search (grok.boundary) driven round by round with a stand-in outcome function:
the points chosen, the intervals, the stopping rule, the caps, failures and the state on disk."""

import json

import pytest

from grok import boundary as b
from grok.boundary import Axis, Run

FRAC = Axis("frac", 0.1, 0.9, 0.05, "up")  # points 2..18 (x 0.05); round 0: 0.1 0.3 0.5 0.7 0.9


def drive(state, outcome, rounds=None):
    """Run the search to its end (or `rounds` rounds) with outcome(cell, value, seed); the runs
    of each round as returned."""
    seen = []
    runs = b.next_round(state)
    while runs and (rounds is None or len(seen) < rounds):
        seen.append(runs)
        runs = b.next_round(state, {r: outcome(*r) for r in runs})
    return seen


def threshold(t, cmp=lambda v, t: v >= t):
    return lambda cell, value, seed: cmp(value, t[cell] if isinstance(t, dict) else t)


def points(runs):
    return sorted({(r.cell, r.value) for r in runs})


def test_monotone_finds_the_threshold_to_within_resolution():
    state = b.new_state(FRAC, ["a"], seeds=2)
    rounds = drive(state, threshold(0.42))
    assert points(rounds[0]) == [("a", v) for v in (0.1, 0.3, 0.5, 0.7, 0.9)]
    # bisection of (0.3, 0.5): 0.4 (no), then (0.4, 0.5): 0.45 (yes); 0.4..0.45 is one step
    assert [points(r) for r in rounds[1:]] == [[("a", 0.4)], [("a", 0.45)]]
    (cell,) = b.report(state)
    assert cell["status"] == "found" and cell["interval"] == [0.4, 0.45]
    assert cell["no_end"] == 0.4 and cell["yes_end"] == 0.45 and not cell["non_monotone"]
    assert cell["runs"] == b.runs_spent(state) == (5 + 2) * 2
    assert not cell["capped"]
    assert b.next_round(state) == []
    assert b.worst_case_runs(FRAC, 1, 2) >= cell["runs"]


def test_runs_are_cells_values_and_seeds():
    state = b.new_state(FRAC, [("op=x+y", "p=97"), ("op=x-y", "p=97")], seeds=[0, 7])
    runs = b.next_round(state)
    assert len(runs) == 2 * 5 * 2
    assert runs[0] == Run(("op=x+y", "p=97"), 0.1, 0) == (("op=x+y", "p=97"), 0.1, 0)
    assert {r.seed for r in runs} == {0, 7}


def test_more_points_per_round():
    state = b.new_state(FRAC, ["a"], seeds=1, points_per_round=3)
    rounds = drive(state, threshold(0.42))
    # (0.3, 0.5) is 4 steps: 3 points fill it in one round
    assert [points(r) for r in rounds[1:]] == [[("a", 0.35), ("a", 0.4), ("a", 0.45)]]
    assert b.report(state)[0]["interval"] == [0.4, 0.45]


def test_per_cell_thresholds_and_worst_case():
    t = {"a": 0.12, "b": 0.58, "c": 0.87}
    state = b.new_state(FRAC, list(t), seeds=3, k=2)
    drive(state, threshold(t))
    got = {c["cell"]: c["interval"] for c in b.report(state)}
    assert got == {"a": [0.1, 0.15], "b": [0.55, 0.6], "c": [0.85, 0.9]}
    # worst case: round 0 (5 points) + gap 4 -> 2 -> 1: two more rounds of 1 point, per cell
    assert b.worst_case_runs(FRAC, 3, 3) == 3 * 3 * (5 + 2)
    assert b.runs_spent(state) == b.worst_case_runs(FRAC, 3, 3)
    assert b.worst_case_runs(FRAC, 3, 3, max_rounds=2) == 3 * 3 * 6
    assert b.worst_case_runs(FRAC, 3, 3, max_runs=50) == 50


def test_all_yes_and_all_no_are_decided_at_the_edge_in_round_0():
    state = b.new_state(FRAC, ["easy", "hard"], seeds=2)
    rounds = drive(state, lambda cell, v, s: cell == "easy")
    assert len(rounds) == 1 and b.runs_spent(state) == 2 * 5 * 2
    easy, hard = b.report(state)
    assert easy["status"] == "everywhere" and easy["interval"] == [None, 0.1]
    assert hard["status"] == "nowhere" and hard["interval"] == [0.9, None]


def test_non_monotone_is_flagged_not_smoothed():
    # groks at 0.3 and from 0.7, not at 0.5: a yes below a no
    state = b.new_state(FRAC, ["a"], seeds=1)
    drive(state, lambda c, v, s: v >= 0.7 or 0.25 <= v <= 0.3)
    (cell,) = b.report(state)
    assert cell["non_monotone"] and cell["against"] == [0.5]
    # the interval is the first crossing, around the hardest yes
    assert cell["status"] == "found" and cell["interval"] == [0.2, 0.25]
    assert {p["value"]: p["outcome"] for p in cell["points"]}[0.5] == "no"


def test_mixed_seeds_k_of_s():
    # seed 0 groks from 0.3, seed 1 from 0.5, seed 2 never
    starts = {0: 0.3, 1: 0.5, 2: 9}
    outcome = lambda c, v, s: v >= starts[s]  # noqa: E731
    for k, interval in ((1, [0.25, 0.3]), (2, [0.45, 0.5])):
        state = b.new_state(FRAC, ["a"], seeds=3, k=k)
        drive(state, outcome)
        (cell,) = b.report(state)
        assert cell["interval"] == interval, k
        pts = {p["value"]: (p["outcome"], p["grokked"]) for p in cell["points"]}
        assert pts[0.1] == ("no", 0)
        if k == 2:
            assert pts[0.3] == ("mixed", 1) and pts[0.9] == ("yes", 2)
    # k = S: nothing reaches 3 of 3; the easiest edge is mixed, not yes: nowhere
    state = b.new_state(FRAC, ["a"], seeds=3)
    drive(state, outcome)
    assert b.report(state)[0]["status"] == "nowhere"
    assert b.point_outcome(["grokked", "unknown"], 2, 3) == "unknown"
    assert b.point_outcome(["grokked", "not_grokked", "not_grokked"], 3, 3) == "mixed"
    assert b.point_outcome(["grokked", "not_grokked"], 3, 3) == "mixed"  # 1 + 1 unknown < 3


def test_a_failed_run_is_retried_once_and_never_counted_as_no():
    calls = {}

    def outcome(c, v, s):
        calls[(v, s)] = calls.get((v, s), 0) + 1
        if v == 0.4:  # always fails
            return "failed"
        if v == 0.3 and calls[(v, s)] == 1:  # fails once, then does not grok
            return "failed"
        return v >= 0.42

    state = b.new_state(FRAC, ["a"], seeds=1)
    rounds = drive(state, outcome)
    assert points(rounds[1]) == [("a", 0.3)]  # the retry; the cell waits for it
    assert points(rounds[2]) == [("a", 0.4)]  # bisection of (0.3, 0.5)
    assert points(rounds[3]) == [("a", 0.4)]  # 0.4 failed: its one retry
    assert points(rounds[4]) == [("a", 0.35)]  # the nearest untried point to the middle
    assert calls[(0.3, 0)] == 2 and calls[(0.4, 0)] == 2  # each failure retried once, no more
    (cell,) = b.report(state)
    pts = {p["value"]: p["outcome"] for p in cell["points"]}
    assert pts[0.3] == "no" and pts[0.4] == "unknown"
    assert points(rounds[5]) == [("a", 0.45)] and len(rounds) == 6
    # 0.4 stays unknown, never a "no": the interval's no end is 0.35, 0.4 is listed inside it,
    # and with only it left inside, the cell ends "unknown" (two steps wide), not "found"
    assert cell["status"] == "unknown" and not cell["capped"]
    assert cell["interval"] == [0.35, 0.45] and cell["unknown_inside"] == [0.4]


def test_only_unknown_points_left_inside():
    state = b.new_state(Axis("n", 0, 4, 1), ["a"], seeds=1, coarse=5)
    drive(state, lambda c, v, s: "failed" if v == 2 else v >= 2)
    (cell,) = b.report(state)
    assert cell["status"] == "unknown" and cell["interval"] == [1, 3]
    assert cell["unknown_inside"] == [2] and not cell["capped"]


def test_caps():
    state = b.new_state(FRAC, ["a", "b"], seeds=2, max_rounds=2)
    rounds = drive(state, threshold(0.42))
    assert len(rounds) == 2
    for cell in b.report(state):
        assert cell["status"] == "open" and cell["capped"] and cell["interval"] == [0.4, 0.5]
    # max_runs: round 0 takes 20, round 1 has room for one point (2 seeds) of cell a only
    state = b.new_state(FRAC, ["a", "b"], seeds=2, max_runs=23)
    rounds = drive(state, threshold(0.42))
    assert [len(r) for r in rounds] == [20, 2]
    assert {r.cell for r in rounds[1]} == {"a"}
    assert b.runs_spent(state) <= 23
    assert [c["capped"] for c in b.report(state)] == [True, True]
    # a round 0 larger than max_runs is cut at whole points
    state = b.new_state(FRAC, ["a"], seeds=3, max_runs=10)
    assert len(b.next_round(state)) == 9


def test_decreasing_direction():
    wd = Axis("optimizer.weight_decay", 0, 2, 0.1, "down")  # groks more easily as it shrinks
    state = b.new_state(wd, ["a"], seeds=1)
    rounds = drive(state, threshold(1.23, lambda v, t: v <= t))
    assert points(rounds[0]) == [("a", v) for v in (0, 0.5, 1, 1.5, 2)]
    (cell,) = b.report(state)
    assert cell["status"] == "found" and cell["interval"] == [1.2, 1.3]
    assert cell["yes_end"] == 1.2 and cell["no_end"] == 1.3
    everywhere = b.new_state(wd, ["a"], seeds=1)
    drive(everywhere, lambda *a: True)
    assert b.report(everywhere)[0]["status"] == "everywhere"
    assert b.report(everywhere)[0]["interval"] == [2, None]


def test_points_are_clean_decimals():
    axis = Axis("frac", "0.05", "0.95", "0.05")
    state = b.new_state(axis, ["a"], seeds=1, coarse=19)
    values = [r.value for r in b.next_round(state)]
    assert " ".join(map(repr, values)) == ("0.05 0.1 0.15 0.2 0.25 0.3 0.35 0.4 0.45 0.5 0.55 "
                                           "0.6 0.65 0.7 0.75 0.8 0.85 0.9 0.95")
    assert [r[1] for r in state["rounds"][0]["runs"]][:3] == ["0.05", "0.1", "0.15"]
    assert 0.35 in values and 0.15 in values  # not 0.35000000000000003
    assert axis.text(7) == "0.35" and axis.value(7) == 0.35
    assert Axis("n_train", 100, 2000, 50).value(7) == 350  # an int on an integral axis
    assert Axis("lr", "1e-4", "1e-3", "1e-4").text(3) == "0.0003"
    with pytest.raises(ValueError, match="multiple of the resolution"):
        Axis("frac", 0.12, 0.9, 0.05)
    with pytest.raises(ValueError, match="multiple of the resolution"):
        axis.index(0.351)
    # outcomes are keyed by the values given out; a drifted float is refused, not rounded
    state = b.new_state(FRAC, ["a"], seeds=1)
    b.next_round(state)
    b.record(state, {("a", 0.3, 0): True})
    assert state["rounds"][0]["outcomes"][1] == "grokked"
    with pytest.raises(ValueError, match="0.30000000000000004 is not a multiple"):
        b.record(state, {("a", 0.1 + 0.2, 0): True})


def test_state_round_trips_through_json(tmp_path):
    path = tmp_path / "boundary_state.json"
    t = {("op=x+y",): 0.42, ("op=x-y",): 0.77}
    a = b.new_state(FRAC, list(t), seeds=2, k=1)
    runs = b.next_round(a)
    half = dict(list({r: threshold(t)(*r) for r in runs}.items())[:7])
    b.record(a, half)
    b.save_state(path, a)
    c = b.load_state(path)
    assert json.loads(path.read_text()) == c
    # a relaunch gets the runs still waiting, then the same next round
    assert b.next_round(c) == [r for r in runs if r not in half]
    rest = {r: threshold(t)(*r) for r in runs if r not in half}
    assert b.next_round(c, rest) == b.next_round(a, rest)
    assert c == json.loads(json.dumps(a))
    drive(a, threshold(t))
    drive(c, threshold(t))
    assert b.report(a) == b.report(c)
    assert b.report(c)[0]["cell"] == ("op=x+y",)


def test_round_0_seeded_from_existing_runs():
    grid = {("a", v, s): v >= 0.42 for v in (0.1, 0.3, 0.5, 0.7) for s in (0, 1)}
    grid[("a", 0.45, 0)] = True   # a point without its seed 1: round 0 runs that seed
    grid[("a", 0.33, 0)] = True   # off the resolution: ignored
    grid[("z", 0.5, 0)] = True    # not a cell: ignored
    state = b.new_state(FRAC, ["a"], seeds=2, reuse=grid)
    assert state["reuse_ignored"] == 2
    runs = b.next_round(state)
    # the rest of round 0 is reused, not run again
    assert sorted(runs) == [("a", 0.45, 1), ("a", 0.9, 0), ("a", 0.9, 1)]
    assert {p["value"]: p["outcome"] for p in b.report(state)[0]["points"]}[0.9] == "pending"
    rounds = drive(state, threshold(0.42))
    # (0.3, 0.45): the middle is between 0.35 and 0.4, the harder first
    assert [points(r) for r in rounds[1:]] == [[("a", 0.35)], [("a", 0.4)]]
    (cell,) = b.report(state)
    assert cell["interval"] == [0.4, 0.45] and cell["runs"] == 3 + 2 + 2


def test_record_refuses_runs_it_did_not_plan():
    state = b.new_state(FRAC, ["a"], seeds=1)
    b.next_round(state)
    with pytest.raises(ValueError, match="not a run of round 0"):
        b.record(state, {("a", 0.35, 0): True})
    with pytest.raises(ValueError, match="outcome"):
        b.record(state, {("a", 0.3, 0): "maybe"})
    b.next_round(state, {r: False for r in b.next_round(state)})
    b.record(state, {("a", 0.3, 0): True})  # round 0's, reported again: ignored
    assert state["rounds"][0]["outcomes"][1] == "not_grokked"
    assert b.worst_case(state) == b.worst_case_runs(FRAC, 1, 1)


@pytest.mark.parametrize("kill_after", range(1, 40, 3))
def test_a_kill_anywhere_and_a_relaunch_give_the_same_search(tmp_path, kill_after):
    """Killed after `kill_after` outcomes (mid-round or between rounds), the state read back from
    disk and driven on gives the same rounds and intervals as an uninterrupted search."""
    t = {("op=a",): 0.27, ("op=b",): 0.63}

    def outcome(cell, v, s):
        return "failed" if (v, s) == (0.5, 1) else v >= t[cell] + 0.05 * s

    whole = b.new_state(FRAC, list(t), seeds=2, k=1)
    drive(whole, outcome)
    path = tmp_path / "state.json"
    state, done = b.new_state(FRAC, list(t), seeds=2, k=1), 0
    runs = b.next_round(state)
    while runs and done < kill_after:
        b.save_state(path, state)
        finished = {r: outcome(*r) for r in runs[:kill_after - done]}
        done += len(finished)
        runs = b.next_round(state, finished)
    b.save_state(path, state)
    relaunched = b.load_state(path)
    drive(relaunched, outcome)
    assert relaunched == json.loads(json.dumps(whole))
    assert b.report(relaunched) == b.report(whole)


def test_a_mixed_point_easier_than_a_yes_flags_the_cell_non_monotone():
    """k of S = 2 of 2: from 0.4 both seeds grok, but at 0.9 only one does (mixed). Mixed fails the
    rule as a no does, easier than a yes: the cell is non-monotone, 0.9 listed against it, and
    its interval is still the first crossing."""
    axis = b.Axis("frac", "0.1", "0.9", "0.1", "up")
    state = b.new_state(axis, ["c"], seeds=2, k=2, coarse=3)

    def grokked(run):
        return run.value >= 0.4 and not (run.value == 0.9 and run.seed == 1)

    runs = b.next_round(state)
    while runs:
        runs = b.next_round(state, {r: grokked(r) for r in runs})
    (row,) = b.report(state)
    assert row["status"] == "found" and row["interval"] == [0.3, 0.4]
    assert row["non_monotone"] and row["against"] == [0.9]
    assert {p["value"]: p["outcome"] for p in row["points"]}[0.9] == "mixed"
