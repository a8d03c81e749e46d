"""Seed-to-seed statistics: mean ± std per group, and the rule that says whether a difference
between two groups is larger than run-to-run noise."""

from __future__ import annotations

import math

NOISE_RULE = (
    "A difference between two groups counts as larger than run-to-run noise when "
    "|mean A - mean B| > 2 x the pooled standard error, SE = s_p * sqrt(1/n_A + 1/n_B), with "
    "s_p^2 = ((n_A - 1) s_A^2 + (n_B - 1) s_B^2) / (n_A + n_B - 2) (s: the sample std over seeds). "
    "It needs at least 3 runs in the two groups together; with one seed each the noise is unknown."
)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def pooled_se(a: list[float], b: list[float]) -> float:
    """The pooled standard error of mean(a) - mean(b); nan when there is no degree of freedom."""
    na, nb = len(a), len(b)
    if na < 1 or nb < 1 or na + nb < 3:
        return math.nan
    (_, sa), (_, sb) = mean_std(a), mean_std(b)
    sp2 = ((na - 1) * sa**2 + (nb - 1) * sb**2) / (na + nb - 2)
    return math.sqrt(sp2) * math.sqrt(1 / na + 1 / nb)


def verdict(a: list[float], b: list[float]) -> tuple[float, float, str]:
    """(mean(a) - mean(b), 2 x pooled SE, "larger than noise" / "within noise" / "unknown")."""
    diff = mean_std(a)[0] - mean_std(b)[0]
    se = pooled_se(a, b)
    if math.isnan(se) or math.isnan(diff):
        return diff, se, "noise unknown (one seed)"
    return diff, 2 * se, "larger than noise" if abs(diff) > 2 * se else "within noise"


def pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``"m ± s"`` of ``values * scale``; ``"m"`` for a single value, ``"-"`` for none."""
    values = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"
