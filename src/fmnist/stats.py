"""Statistics over seeds: mean, std, CI of the mean, prediction interval, paired differences, Holm.

The bottom of the findings stack: `aggregate` and `compare` both build on it, and it imports
neither. Distributions come from scipy (`scipy.stats.t`) rather than a hand-typed t table: exact
for every degree of freedom and every level. scipy is imported on first use, not with this module:
`import scipy.stats` took 1.6-2.9 s on the shared 2-core AMD EPYC (pandas: 1.1-1.5 s, same
moment), and the Snakefile imports `compare` (hence this module) on every invocation, dry runs
included, which never need a quantile; the aggregate job pays it once. Quantiles are cached per
degree of freedom. scipy has no Holm step-down (its `false_discovery_control` is
Benjamini-Hochberg/Yekutieli), so `holm` is the ten-line textbook procedure, tested against a
worked example.

Two intervals answer two questions:
- the confidence interval of the mean, mean +- t(n-1) s / sqrt(n), says how well we know our
  mean; it shrinks towards a point as seeds are added;
- the prediction interval, mean +- t(n-1) s sqrt(1 + 1/n), says where one more run of ours would
  fall (95% of the time). A published figure is a single run, so whether it is consistent with
  ours is a question for the prediction interval: judged against the CI of the mean, a faithful
  single run falls outside it 16% of the time with 3 seeds, and more often with more seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

LEVEL = 0.95
"""Two-sided level of every interval in the report."""

MIN_SEEDS_FOR_VERDICT = 3
"""Fewest seeds for a prediction-interval verdict: with 2, t(1) = 12.7 makes the interval say
almost nothing (a published figure 10 points away would still read "consistent")."""


@lru_cache(maxsize=256)
def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided `level` quantile of Student's t with `df` degrees of freedom (NaN for df < 1)."""
    if df < 1:
        return math.nan
    from scipy.stats import t  # on first use: see the module docstring

    return float(t.ppf(0.5 + level / 2, df))


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The values that are numbers: None and NaN (a diverged or missing run) dropped."""
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return np.asarray(out, dtype=float)


def mean_ci(values: Iterable[float | None], level: float = LEVEL) -> dict:
    """n, mean, sample std and the t-interval of the mean (NaN where undefined: n < 2 for the interval)."""
    x = finite(values)
    n = len(x)
    if n == 0:
        return {
            "n": 0,
            "mean": math.nan,
            "std": math.nan,
            "ci95_low": math.nan,
            "ci95_high": math.nan,
        }
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    half = t_quantile(n - 1, level) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def prediction_interval(
    values: Iterable[float | None], level: float = LEVEL, extra_sd: float = 0.0
) -> tuple[float, float]:
    """Where one more run from the same distribution falls with probability `level`:
    mean +- t(n-1) * s * sqrt(1 + 1/n); (NaN, NaN) below 2 values.

    `extra_sd` is a known standard deviation that the new run carries and our seeds do not: the
    sampling noise of a validation split other than ours (`split_sd`). The half-width is then
    t(df) * sqrt(s^2 (1 + 1/n) + extra_sd^2), with df by Welch-Satterthwaite (the known term has
    infinite degrees of freedom): df = (s^2 (1 + 1/n) + extra_sd^2)^2 / ((s^2 (1 + 1/n))^2 / (n - 1)).
    It is n - 1 when extra_sd is 0 and tends to the normal quantile when the known term dominates."""
    x = finite(values)
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    seed_var = float(x.var(ddof=1)) * (1 + 1 / n)
    total_var = seed_var + float(extra_sd) ** 2
    if seed_var == 0:
        quantile = t_quantile(10**9, level) if total_var > 0 else 0.0
    else:
        quantile = t_quantile(welch_df(seed_var, n - 1, total_var), level)
    half = quantile * math.sqrt(total_var)
    return (mean - half, mean + half)


def welch_df(estimated_var: float, df: int, total_var: float) -> float:
    """Welch-Satterthwaite degrees of freedom of a variance `total_var` of which only
    `estimated_var` is estimated (with `df` degrees of freedom); the rest is known exactly."""
    return total_var**2 / (estimated_var**2 / df)


def binomial_sd(p: float, n: int) -> float:
    """Standard deviation of an accuracy p (a fraction) measured on n independent images:
    sqrt(p (1 - p) / n); the sampling noise of a split of that size."""
    return math.sqrt(p * (1 - p) / n)


LOSS_SD_RATIO = 2.6
"""Per-image cross-entropy standard deviation as a multiple of the mean loss, for `split_sd` of a
loss. Our metrics keep only mean losses, so the ratio was measured once (docs/fidelity.md,
"Intervals that count the other split"): a LeNet-like net on the shared 6,000-image validation
split gave 2.5-2.65 at mean losses 0.25-0.27 (epochs 7-12; 2.6 their mean), 1.9 at 0.43. A
per-image loss is near 0 for most images and large for the few misclassified ones, so its spread
is a multiple of its mean, growing as the model gets surer (all loss on the errors, each of equal
loss, would give sqrt(p / (1 - p)) = 3.1 at 90.9%)."""


def split_sd(value: float, n: int | None, kind: str, factor: float = 1.0) -> float:
    """The sampling noise of one figure measured on a split of n images, in the figure's unit.

    kind `accuracy`: binomial_sd of value / factor (factor 100 for a figure in percent), times
    factor; kind `loss`: LOSS_SD_RATIO * value / sqrt(n). 0 for n None (no split to count)."""
    if not n:
        return 0.0
    if kind == "accuracy":
        p = min(max(value / factor, 0.0), 1.0)
        return factor * binomial_sd(p, n)
    if kind == "loss":
        return LOSS_SD_RATIO * value / math.sqrt(n)
    raise ValueError(f"split_sd: kind {kind!r} is not accuracy or loss")


def describe(values: Iterable[float | None], level: float = LEVEL, extra_sd: float = 0.0) -> dict:
    """`mean_ci` plus the prediction interval (`pi95_low`, `pi95_high`), widened by `extra_sd`
    (see `prediction_interval`)."""
    x = finite(values)
    low, high = prediction_interval(x, level, extra_sd)
    return {**mean_ci(x, level), "pi95_low": low, "pi95_high": high}


def t_test_p(diffs: Iterable[float | None]) -> float:
    """Two-sided p-value of a one-sample t-test of mean 0 (the paired t-test on differences).

    Differences that are all equal (zero spread) give p = 0 when non-zero and 1 when zero, where
    scipy's ttest_1samp gives NaN: every seed agreeing on the sign and size is the clearest case.
    NaN below 2 differences."""
    x = finite(diffs)
    n = len(x)
    if n < 2:
        return math.nan
    mean, std = float(x.mean()), float(x.std(ddof=1))
    if std == 0:
        return 0.0 if mean != 0 else 1.0
    from scipy.stats import t  # on first use: see the module docstring

    statistic = mean / (std / math.sqrt(n))
    return float(2 * t.sf(abs(statistic), n - 1))


def paired_differences(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], np.ndarray]:
    """a - b for the keys (seeds) where both have a finite value: the seeds, sorted, and the differences."""
    keys = sorted(k for k in a.keys() & b.keys() if len(finite([a[k]])) and len(finite([b[k]])))
    return keys, np.asarray([float(a[k]) - float(b[k]) for k in keys], dtype=float)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    Sorted ascending, the i-th (0-based) of m valid p-values is multiplied by (m - i), capped at 1,
    and made non-decreasing. NaN entries (comparisons without a test) stay NaN and do not count in m.
    Rejecting where the adjusted p < alpha keeps the chance of any false "better"/"worse" in the
    family below alpha."""
    valid = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    out = [math.nan] * len(p_values)
    m = len(valid)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def shared_offset_test(diffs: Iterable[float | None], common_sd: float, level: float = LEVEL) -> dict:
    """Whether k differences (published - ours) that share one offset are, together, away from 0.

    A sign test ("8 of 8 below, p = 0.008") treats the k differences as independent. Report B's
    eight share one validation split (theirs and ours), one recipe and one seed set, so one common
    offset c moves all eight together: d_i = delta + c + e_i, c ~ N(0, common_sd^2) shared, e_i
    independent. The k differences estimate delta + c with spread s / sqrt(k); c's variance cannot
    be estimated from them (it is common) and is given: the split noise of both splits
    (`split_sd`), the part we can size. The mean difference is judged against
    sqrt(common_sd^2 + s^2 / k), df by Welch-Satterthwaite; a shared *recipe* offset (a guessed
    optimizer or batch size wrong for all eight) is not noise and no test removes it.

    Returns k, mean, its standard error, df, the interval (`ci95_low`, `ci95_high`), the two-sided
    p-value, and `p_sign_independent`, the sign test's p-value that the shared offset invalidates."""
    x = finite(diffs)
    k = len(x)
    out = {"k": k, "mean": math.nan, "se": math.nan, "df": math.nan, "ci95_low": math.nan,
           "ci95_high": math.nan, "p_value": math.nan, "p_sign_independent": math.nan}
    if k < 2:
        return out
    from scipy.stats import binomtest, t  # on first use: see the module docstring

    mean = float(x.mean())
    spread_var = float(x.var(ddof=1)) / k
    total_var = spread_var + float(common_sd) ** 2
    df = welch_df(spread_var, k - 1, total_var) if spread_var > 0 else math.inf
    se = math.sqrt(total_var)
    half = (t_quantile(df, level) if math.isfinite(df) else t_quantile(10**9, level)) * se
    p = float(2 * t.sf(abs(mean) / se, df)) if se > 0 else (0.0 if mean else 1.0)
    nonzero = x[x != 0]
    sign = binomtest(int((nonzero > 0).sum()), len(nonzero)).pvalue if len(nonzero) else math.nan
    out.update(mean=mean, se=se, df=df, ci95_low=mean - half, ci95_high=mean + half, p_value=p,
               p_sign_independent=float(sign))
    return out
