"""The grok verdict on constructed curves."""

from grok.verdict import GROKKED, NO_DELAY, NOT_GENERALISED, settled, verdict


def curve(points):
    return [{"step": s, "train_acc": a, "test_acc": b} for s, a, b in points]


def test_delayed_generalisation_is_grokked():
    v = verdict(curve([(0, .01, .01), (100, 1, .1), (1000, 1, .4), (2000, 1, .995), (2100, 1, 1)]))
    assert (v["verdict"], v["memorisation_step"], v["grok_step"], v["grok_delay"]) == \
        (GROKKED, 100, 2000, 1900)
    assert v["best_test_acc"] == 1 and v["best_test_step"] == 2100


def test_simultaneous_generalisation_is_not_grokking():
    v = verdict(curve([(0, .01, .01), (100, .5, .4), (200, 1, .995), (300, 1, 1)]))
    assert v["verdict"] == NO_DELAY and v["grok_step"] == 200 and v["memorisation_step"] == 200


def test_a_dip_below_the_bar_resets_the_grok_step():
    v = verdict(curve([(0, 0, 0), (100, 1, .1), (1000, 1, .995), (1100, 1, .9), (2000, 1, .995)]))
    assert v["grok_step"] == 2000


def test_no_generalisation_reports_best_accuracy():
    v = verdict(curve([(0, 0, 0), (100, 1, .3), (200, 1, .42), (300, 1, .2)]))
    assert v["verdict"] == NOT_GENERALISED and v["grok_step"] is None
    assert (v["best_test_acc"], v["best_test_step"]) == (.42, 200)


def test_delay_ratio_is_configurable():
    c = curve([(0, 0, 0), (100, 1, .1), (300, 1, 1)])
    assert verdict(c, delay_ratio=2.0)["verdict"] == GROKKED
    assert verdict(c, delay_ratio=4.0)["verdict"] == NO_DELAY


def test_settled_needs_both_accuracies_held_for_patience_steps():
    c = curve([(0, 0, 0), (100, 1, .1), (200, 1, 1), (300, 1, 1)])
    assert settled(c, 0.99, 100) and not settled(c, 0.99, 101)
    assert not settled(c[:2], 0.99, 0)
