"""The statistics an experiment report rests on, with the standard library's math only.

- ``two_proportion_p_value``: the two-sided p-value of the two-proportion z-test with the pooled
  standard error (the textbook test; ``statsmodels.stats.proportion.proportions_ztest``, and
  R's ``prop.test(correct = FALSE)``, whose chi-square is this z squared).
- ``difference_interval``: the confidence interval of the difference of two rates with the
  unpooled (Wald) standard error, which is what the interval needs: under the alternative the
  two rates differ, so their variances are estimated apart.
- ``sample_ratio_check``: Pearson's chi-square goodness-of-fit of units per variant against the
  configured weights, with ``k - 1`` degrees of freedom: a sample-ratio mismatch (Kohavi et al.,
  "Trustworthy Online Controlled Experiments", ch. 21) means assignment or exposure logging is
  broken, and every other figure of the report with it. It fires below ``SRM_THRESHOLD``.
- ``chi_square_sf``: the chi-square survival function, the regularized upper incomplete gamma
  function ``Q(df / 2, x / 2)`` (series below ``a + 1``, Lentz's continued fraction above, as in
  Numerical Recipes 6.2), accurate to ~1e-14 relative, far into the tail.

Pure: no IO; every function is total (no units gives p = 1, not a ZeroDivisionError).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval
SRM_THRESHOLD = 0.001  # a sample-ratio p-value below this is a mismatch (the contract's)

_EPSILON = 1e-15
_TINY = 1e-300
_MAX_ITERATIONS = 10_000


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_p_value(
    control_conversions: int, control_units: int, conversions: int, units: int
) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of ``conversions / units``
    against the control's rate; 1 when either side has no units or nothing varies."""
    if control_units <= 0 or units <= 0:
        return 1.0
    pooled = (control_conversions + conversions) / (control_units + units)
    variance = pooled * (1 - pooled) * (1 / control_units + 1 / units)
    if variance <= 0:
        return 1.0
    z = (conversions / units - control_conversions / control_units) / math.sqrt(variance)
    return min(1.0, 2 * normal_sf(abs(z)))


def difference_interval(
    control_conversions: int,
    control_units: int,
    conversions: int,
    units: int,
    z: float = Z_95,
) -> tuple[float, float]:
    """The interval ``(rate - control rate) +- z * SE`` with the unpooled standard error
    (default z: a 95 % interval); (0, 0) when either side has no units."""
    if control_units <= 0 or units <= 0:
        return (0.0, 0.0)
    p0 = control_conversions / control_units
    p1 = conversions / units
    error = math.sqrt(p0 * (1 - p0) / control_units + p1 * (1 - p1) / units)
    difference = p1 - p0
    return (difference - z * error, difference + z * error)


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), for a > 0 and x >= 0."""
    if a <= 0:
        raise ValueError(f"a must be positive, not {a}")
    if x <= 0:
        return 1.0
    if x < a + 1:
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return _gamma_q_fraction(a, x)


def _gamma_p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_ITERATIONS):
        denominator += 1
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_fraction(a: float, x: float) -> float:
    # Modified Lentz's method for the continued fraction of Gamma(a, x).
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPSILON:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi_square_sf(statistic: float, degrees_of_freedom: int) -> float:
    """P(X > statistic) for X chi-square distributed with ``degrees_of_freedom`` (>= 1)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {degrees_of_freedom}")
    return regularized_gamma_q(degrees_of_freedom / 2, statistic / 2)


@dataclass(frozen=True)
class SampleRatio:
    """The sample-ratio-mismatch check: statistic, degrees of freedom, p-value, verdict."""

    chi_square: float
    degrees_of_freedom: int
    p_value: float
    mismatch: bool


def sample_ratio_check(
    units: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Pearson's chi-square of ``units`` per variant against ``weights`` (normalised to add up
    to 1). A variant of weight 0 counts no degree of freedom; units in one are a mismatch
    outright (p 0). No units at all: no evidence of anything (p 1)."""
    if len(units) != len(weights):
        raise ValueError(f"{len(units)} counts for {len(weights)} weights")
    total = sum(units)
    weight_sum = math.fsum(w for w in weights if w > 0)
    live = [(n, w) for n, w in zip(units, weights, strict=True) if w > 0]
    degrees = max(len(live) - 1, 1)
    if total == 0 or weight_sum <= 0:
        return SampleRatio(0.0, degrees, 1.0, False)
    if any(n > 0 for n, w in zip(units, weights, strict=True) if w <= 0):
        return SampleRatio(math.inf, degrees, 0.0, True)
    statistic = math.fsum(
        (n - total * w / weight_sum) ** 2 / (total * w / weight_sum) for n, w in live
    )
    p_value = chi_square_sf(statistic, degrees) if len(live) > 1 else 1.0
    return SampleRatio(statistic, degrees, p_value, p_value < threshold)
