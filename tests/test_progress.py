"""Progress: the estimated time left after each epoch."""

import pytest

from liposome_bench.progress import EpochEta, format_eta


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_is_an_upper_bound_until_a_fold_has_finished_then_uses_its_epochs():
    clock = FakeClock()
    eta = EpochEta(clock)
    assert eta.epoch(1, 10) is None  # no fold started
    eta.fold(0, 3)
    clock.now = 5.0
    # 5 s per epoch; 9 epochs left in this fold, 2 later folds of at most 10.
    assert eta.epoch(1, 10) == pytest.approx((5.0 * (9 + 20), True))
    clock.now = 20.0
    eta.epoch(4, 10)  # fold 1 stops early after 4 epochs
    eta.fold(1, 3)
    clock.now = 30.0
    left, upper = eta.epoch(2, 10)
    # 5 s per epoch; 8 left at most in this fold, 1 later fold of about 4.
    assert (left, upper) == (pytest.approx(5.0 * (8 + 4)), False)


def test_format_eta():
    assert format_eta(59.6, True) == "≤ 1:00"
    assert format_eta(3 * 3600 + 5) == "~3:00:05"
    assert format_eta(-3) == "~0:00"
