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
from collections.abc import Callable, Iterable, Sequence
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
"""Fallback only, for runs whose metrics.json predates `val_loss_image_std`: the per-image
cross-entropy standard deviation as a multiple of the mean loss, measured once (docs/fidelity.md,
"Intervals that count the other split"): a LeNet-like net on the shared 6,000-image validation
split gave 2.5-2.65 at mean losses 0.25-0.27. A run now records its own per-image spread
(`val_loss_image_std`), which `split_sd` takes as `image_sd`; a figure that falls back to this
ratio says so in its reading."""


def image_var(value: float, kind: str, factor: float = 1.0, image_sd: float | None = None) -> float:
    """The variance of one image's contribution to a figure, in the figure's unit squared: an
    accuracy's p (1 - p) (times factor^2 for a figure in percent); a loss's `image_sd`^2 (the run's
    recorded per-image loss spread), else (LOSS_SD_RATIO x the loss)^2."""
    if kind == "accuracy":
        p = min(max(value / factor, 0.0), 1.0)
        return factor**2 * p * (1 - p)
    if kind == "loss":
        sd = image_sd if image_sd is not None and math.isfinite(image_sd) else LOSS_SD_RATIO * value
        return sd**2
    raise ValueError(f"image_var: kind {kind!r} is not accuracy or loss")


def split_sd(value: float, n: int | None, kind: str, factor: float = 1.0, image_sd: float | None = None) -> float:
    """The sampling noise of one figure measured on a split of n images, in the figure's unit:
    sqrt(image_var / n) (binomial for an accuracy). 0 for n None (no split to count)."""
    if not n:
        return 0.0
    return math.sqrt(image_var(value, kind, factor, image_sd) / n)


def split_term_sd(image_variance: float, n_theirs: int, n_ours: int, seed_sd: float) -> float:
    """The standard deviation that a published figure on its own n_theirs-image validation split
    adds to our prediction interval, beyond what our seeds (all on our one n_ours-image split)
    already show (derivation: docs/fidelity.md, "The split term").

    Per image, the variance v splits into a part common to every model (how hard the image is) and
    a part that changes from seed to seed. Our seed variance s^2 holds the latter over our split,
    q = v_seed / n_ours; the published run holds it over theirs, and both splits' common parts are
    new. The variance beyond s^2 (1 + 1/k) is v (1/n_theirs + 1/n_ours) - 2 q, with q estimated as
    min(s^2, v / n_ours) (all of our seed spread per-image noise, at most the whole per-image
    variance); floored at 0."""
    seed_var = 0.0 if seed_sd is None or not math.isfinite(seed_sd) else float(seed_sd) ** 2
    q = min(seed_var, image_variance / n_ours)
    extra = image_variance * (1 / n_theirs + 1 / n_ours) - 2 * q
    return math.sqrt(max(extra, 0.0))


def half_width(interval: tuple[float, float] | dict) -> float:
    """Half the width of an interval (low, high) or of a summary's 95% prediction interval."""
    if isinstance(interval, dict):
        interval = (interval["pi95_low"], interval["pi95_high"])
    low, high = interval
    return (high - low) / 2


def seeds_to_halve(half_at: Callable[[int], float], n: int, limit: int = 100_000) -> int | None:
    """The fewest seeds at which `half_at(seeds)` (an interval's half-width as a function of the
    seed count, our spread held fixed) is at most half of `half_at(n)`; None when no number of
    seeds can (a prediction interval cannot shrink below the runs' own spread), or below 2 seeds."""
    if n < 2:
        return None
    target = half_at(n) / 2
    if not math.isfinite(target) or half_at(limit) > target:
        return None
    low, high = n, limit  # half_at(low) > target >= half_at(high); half-widths fall with seeds
    while high - low > 1:
        mid = (low + high) // 2
        if half_at(mid) <= target:
            high = mid
        else:
            low = mid
    return high


def ci_half_at(sd: float) -> Callable[[int], float]:
    """A confidence interval's half-width t(n-1) sd / sqrt(n) as a function of the seed count n."""
    return lambda m: t_quantile(m - 1) * sd / math.sqrt(m)


def pi_half_at(sd: float, extra_sd: float = 0.0) -> Callable[[int], float]:
    """`prediction_interval`'s half-width as a function of the seed count n, the spread held fixed."""
    def half(m: int) -> float:
        seed_var = sd**2 * (1 + 1 / m)
        total = seed_var + extra_sd**2
        df = welch_df(seed_var, m - 1, total) if seed_var > 0 else 10**9
        return t_quantile(df) * math.sqrt(total)
    return half


def detectable(sd: float, n: int, power: float = 0.8, level: float = LEVEL) -> float:
    """The smallest true mean difference a two-sided one-sample t-test of n values with spread sd
    detects with probability `power`: (t(n-1, level) + t(n-1, power one-sided)) sd / sqrt(n)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (t_quantile(n - 1, level) + t_quantile(n - 1, 2 * power - 1)) * sd / math.sqrt(n)


def effect_interval(a: Iterable[float], b: Iterable[float], level: float = LEVEL) -> dict:
    """Where ONE published difference of two independent single runs (a - b) should fall, from our
    runs of a and b paired by seed (equal length, pair i from seed i).

    The report's two runs were separate runs on one split: its difference is X_a - X_b with
    variance var_a + var_b (the split's common offset cancels, so no split term), around the true
    difference, which our mean paired difference dbar estimates with variance var_d / n. So
    X_a - X_b - dbar has variance var_a + var_b + var_d / n = tr(M Sigma), Sigma the covariance of a
    pair, M = [[1 + 1/n, -1/n], [-1/n, 1 + 1/n]]. Its estimate from our n pairs, tr(M S), is a sum of
    two scaled chi-squares with n - 1 degrees of freedom each (S is Wishart), so its degrees of freedom
    are (n - 1) tr(M S)^2 / tr((M S)^2) (Satterthwaite), between n - 1 and 2 (n - 1); the interval is
    dbar +- t(df) sqrt(tr(M S)). (Treating s_a^2, s_b^2 and s_d^2 as independent estimates, as Welch
    would, overstates df: they come from the same pairs; the coverage test in tests/test_findings.py
    fails with it.) Pairing by seed removes the shared seed-to-seed noise from dbar, never from the
    published difference.

    Returns n (pairs), mean, the CI of the mean (`ci95_low`, `ci95_high`), `pi95_low`, `pi95_high`,
    `sd_a`, `sd_b`, `sd_d`, `cov_ab` and `df`; NaN below 2 pairs."""
    xa, xb = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if len(xa) != len(xb):
        raise ValueError(f"effect_interval: {len(xa)} values of a, {len(xb)} of b; pass the pairs (seed by seed)")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    d = xa - xb
    summary = mean_ci(d, level)
    out = {**summary, "pi95_low": math.nan, "pi95_high": math.nan, "sd_a": math.nan, "sd_b": math.nan,
           "sd_d": summary["std"], "cov_ab": math.nan, "df": math.nan}
    n = len(d)
    if n < 2:
        return out
    cov = np.cov(np.vstack([xa, xb]), ddof=1)
    half = effect_pi_half_at(math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1]), float(cov[0, 1]))(n, level)
    out.update(pi95_low=summary["mean"] - half, pi95_high=summary["mean"] + half, sd_a=math.sqrt(cov[0, 0]),
               sd_b=math.sqrt(cov[1, 1]), cov_ab=float(cov[0, 1]), df=_effect_df(cov, n))
    return out


def _effect_matrix(cov: np.ndarray, n: int) -> np.ndarray:
    m = np.array([[1 + 1 / n, -1 / n], [-1 / n, 1 + 1 / n]])
    return m @ cov


def _effect_df(cov: np.ndarray, n: int) -> float:
    a = _effect_matrix(cov, n)
    square = float(np.trace(a @ a))
    return (n - 1) * float(np.trace(a)) ** 2 / square if square > 0 else 10.0**9


def effect_pi_half_at(sd_a: float, sd_b: float, cov_ab: float) -> Callable[..., float]:
    """`effect_interval`'s half-width as a function of the number of pairs, the pair covariance held
    fixed."""
    cov = np.array([[sd_a**2, cov_ab], [cov_ab, sd_b**2]])

    def half(m: int, level: float = LEVEL) -> float:
        total = float(np.trace(_effect_matrix(cov, m)))
        return t_quantile(_effect_df(cov, m), level) * math.sqrt(max(total, 0.0))
    return half


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

    Its power is low: `detectable` is the true mean offset it finds 80% of the time, (t(df, 95%) +
    t(df, 80% one-sided)) x its standard error; with report B's split noise (common sd 0.42 points)
    about 0.9 points, so it cannot confirm a shortfall of 0.2 and its p-value says nothing then.

    Returns k, mean, its standard error, df, the interval (`ci95_low`, `ci95_high`), the two-sided
    p-value, `detectable`, and `p_sign_independent`, the sign test's p-value that the shared offset
    invalidates."""
    x = finite(diffs)
    k = len(x)
    out = {"k": k, "mean": math.nan, "se": math.nan, "df": math.nan, "ci95_low": math.nan,
           "ci95_high": math.nan, "p_value": math.nan, "detectable": math.nan, "p_sign_independent": math.nan}
    if k < 2:
        return out
    from scipy.stats import binomtest, t  # on first use: see the module docstring

    mean = float(x.mean())
    spread_var = float(x.var(ddof=1)) / k
    total_var = spread_var + float(common_sd) ** 2
    df = welch_df(spread_var, k - 1, total_var) if spread_var > 0 else math.inf
    se = math.sqrt(total_var)
    finite_df = df if math.isfinite(df) else 10**9
    half = t_quantile(finite_df, level) * se
    power_80 = (t_quantile(finite_df, level) + t_quantile(finite_df, 0.6)) * se
    p = float(2 * t.sf(abs(mean) / se, df)) if se > 0 else (0.0 if mean else 1.0)
    nonzero = x[x != 0]
    sign = binomtest(int((nonzero > 0).sum()), len(nonzero)).pvalue if len(nonzero) else math.nan
    out.update(mean=mean, se=se, df=df, ci95_low=mean - half, ci95_high=mean + half, p_value=p,
               detectable=power_80, p_sign_independent=float(sign))
    return out
