"""Elementary formulas over counts, durations and money: ratios, quantiles, rounding. Pure."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

_CENT = 100


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``; None when ``whole`` is 0."""
    return part / whole if whole else None


def win_rate(won: int, lost: int) -> float | None:
    """``won / (won + lost)``; None when nothing closed."""
    return ratio(won, won + lost)


def lead_velocity_rate(this_period: int, last_period: int) -> float | None:
    """``(this_period - last_period) / last_period``; None when ``last_period`` is 0."""
    return (this_period - last_period) / last_period if last_period else None


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) by linear interpolation between closest ranks, as PostgreSQL's
    ``percentile_cont`` and numpy's default: at rank ``h = (n - 1) q`` (0-based, sorted ascending),
    ``x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])``. None when there are no values."""
    if not 0 <= q <= 1:
        raise ValueError("q must be between 0 and 1")
    if not values:
        return None
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def median(values: Sequence[float]) -> float | None:
    """``percentile(values, 0.5)``: the middle value, or the mean of the two middle values."""
    return percentile(values, 0.5)


def days(delta: dt.timedelta) -> float:
    return delta / dt.timedelta(days=1)


def money(value: Fraction) -> Decimal:
    """An exact amount rounded half-even to 0.01."""
    return Decimal(round(value * _CENT)).scaleb(-2)


def average_money(total: Decimal, count: int) -> Decimal:
    """``total / count`` rounded to 0.01."""
    return money(Fraction(total) / count)


CYCLE_FLOOR_DAYS = Fraction(1)
"""The least sales cycle sales velocity divides by: deals won within a day of opening are a day's work."""


def sales_velocity(
    open_deals: int, average_won_value: Fraction, won: int, lost: int, average_cycle_days: Fraction
) -> Decimal | None:
    """``open_deals x average_won_value x win_rate / max(average_cycle_days, CYCLE_FLOOR_DAYS)``, money per day,
    rounded to 0.01; None when the win rate is undefined."""
    if won + lost == 0:
        return None
    divisor = max(average_cycle_days, CYCLE_FLOOR_DAYS)
    return money(open_deals * average_won_value * Fraction(won, won + lost) / divisor)


def weighted_amount(amount: Decimal, probability: float) -> Decimal:
    """``amount x probability``, the probability as written (0.3, not 0.2999...)."""
    return amount * Decimal(repr(probability))
