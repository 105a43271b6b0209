"""Findings from the runs table: published beside reproduced, paired effects, gaps to the best, sweeps, Pareto fronts.

Torch-free (pandas and fmnist.stats). A published figure is one run, so it is judged against the
95% prediction interval of our seeds (where one more run of ours would fall), not the interval of
our mean. Differences between two experiments are paired by seed (same data split and seed,
different model or augmentation), which removes the seed-to-seed spread they share; a table of
such differences is one family of tests, Holm-adjusted, and says how many it holds.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pandas as pd

from fmnist import stats
from fmnist.config import ConfigError
from fmnist.published import (  # noqa: F401 (re-exported: fmnist.compare is the comparison's one name)
    EXPERIMENT_PATTERN,
    KINDS,
    METRICS,
    OUR_VAL_SIZE,
    PUBLISHED_SCHEMA,
    SPLIT_NOISE,
    Metric,
    check_report_config,
    load_effects,
    load_published,
    metric_spec,
)
from fmnist.stats import mean_ci

COUNT_TOLERANCE = 0.01
"""A count (parameters) "matches" a published one within this relative difference: the reports
round (173,000 for 173,962) and may count a bias or a normalisation layer differently."""

VERDICT_NOTE = (
    "A validation figure (val_accuracy, val_loss) was measured on the report's own split, ours on "
    "the shared one: the interval adds the sampling noise of both splits beyond what our seeds "
    "already show (per image: p(1-p) for an accuracy, the runs' recorded per-image loss spread for a "
    "loss; docs/fidelity.md, \"The split term\"). A test figure needs no such term: both sides are "
    "measured on the same 10,000 test images."
)
"""Why a validation figure's interval is wider than a test figure's (part of the `consistent` help)."""

VERDICT_HELP: dict[str, str] = {
    "consistent": "the published run lies inside our 95% prediction interval: one more run of ours "
    "could well have given it. " + VERDICT_NOTE,
    "published better": "the published run lies outside our 95% prediction interval on the better "
    "side: higher accuracy (or lower loss) than one more run of ours would give 95% of the time.",
    "published worse": "the published run lies outside our 95% prediction interval on the worse "
    "side: lower accuracy (or higher loss) than one more run of ours would give 95% of the time.",
    "too few seeds": f"fewer than {stats.MIN_SEEDS_FOR_VERDICT} of our seeds have a value: the "
    "prediction interval would be too wide to judge (t with 1 degree of freedom is 12.7).",
    "no result": "the experiment ran but no seed produced this metric (every run diverged).",
    "figure only": "the report showed this result in a figure without a number.",
    "not run": "this config does not run the experiment (config/full.yaml runs them all).",
    "matches": f"a parameter count within {COUNT_TOLERANCE:.0%} of the published one (reports round "
    "their counts).",
    "differs by x%": f"a parameter count more than {COUNT_TOLERANCE:.0%} away from the published one; "
    "the sign is ours relative to theirs.",
    "not judged": "a timing from other hardware: shown beside ours, never given a verdict.",
}
"""One sentence per published-vs-reproduced verdict, shown beside the table in the report."""


def _stats(values: pd.Series, factor: float = 1.0, extra_sd: float = 0.0) -> dict:
    return stats.describe((float(v) * factor for v in values if v is not None and not pd.isna(v)),
                          extra_sd=extra_sd)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def verdict_score(value: float | None, summary: dict, better: str = "higher") -> str:
    """Whether a published single run is consistent with one more run of ours: inside our 95%
    prediction interval (`consistent`), outside it on the better side (`published better`: above
    it for an accuracy, below it for a loss) or the worse side (`published worse`), or why that is
    not known."""
    if _missing(value):
        return "figure only"
    if summary["n"] == 0:
        return "no result"
    if summary["n"] < stats.MIN_SEEDS_FOR_VERDICT:
        return "too few seeds"
    if summary["pi95_low"] <= value <= summary["pi95_high"]:
        return "consistent"
    above = value > summary["pi95_high"]
    return "published better" if above == (better == "higher") else "published worse"


def verdict_count(value: float | None, ours: float) -> tuple[str, float]:
    """A count (parameters) compared exactly: `matches` within COUNT_TOLERANCE, else `differs by x%`
    (ours relative to the published count); with the relative difference."""
    if _missing(value):
        return "figure only", math.nan
    if _missing(ours):
        return "no result", math.nan
    if value == 0:
        return ("matches", 0.0) if ours == 0 else ("differs", math.inf)
    relative = (ours - value) / abs(value)
    if abs(relative) <= COUNT_TOLERANCE:
        return "matches", relative
    return f"differs by {100 * relative:+.1f}%", relative


def reading(verdict: str, better: str, split: str = "", epochs: str = "", power: str = "") -> str:
    """Where the published run lies (above or below our interval, which flips meaning between an
    accuracy and a loss), what the interval counts besides our seeds (`split`), and the best epochs
    side by side (`epochs`)."""
    parts = []
    if verdict in ("published better", "published worse"):
        above = (verdict == "published better") == (better == "higher")
        parts.append(f"{'above' if above else 'below'} our 95% prediction interval")
    parts += [p for p in (power, split, epochs) if p]
    return "; ".join(parts)


def _epochs_words(published_best: int | None, group: pd.DataFrame | None, published_run: int | None = None) -> str:
    """ "best epoch: published 8, ours 12, 9, 14" where the report names the epoch of its figure, and
    "epochs run: published 27, ours 19, 23, 20" where it names the epoch its run ended."""
    if group is None:
        return ""
    parts = []
    for label, published, column in (("best epoch", published_best, "best_epoch"),
                                      ("epochs run", published_run, "epochs_run")):
        if published and column in group:
            ours = ", ".join(str(int(v)) for v in group.sort_values("seed")[column].dropna())
            parts.append(f"{label}: published {published}, ours {ours or 'none'}")
    return "; ".join(parts)


def split_term(e: dict, spec: Metric, group: pd.DataFrame, our_mean: float, seed_sd: float = math.nan
               ) -> tuple[float, str]:
    """The sampling noise (sd, in the published unit) that a published validation figure adds to
    our prediction interval beyond what our seeds show (`stats.split_term_sd`: both splits' noise,
    less the per-image part our seed spread already holds); with a sentence that says so.
    (0, "") for a figure on the shared test set. A report that gives no split size is assumed to
    have split as we did (`OUR_VAL_SIZE`), and the sentence says it was assumed. A loss uses the
    runs' recorded per-image loss spread (`val_loss_image_std`, as a ratio to the loss it was
    measured at, times our mean loss); runs that predate it fall back to `stats.LOSS_SD_RATIO`, and
    the sentence says so."""
    if spec.split_noise is None or _missing(e["value"]) or _missing(our_mean):
        return 0.0, ""
    ours = OUR_VAL_SIZE
    if "n_val" in group and group["n_val"].notna().any():
        ours = int(group["n_val"].dropna().iloc[0])
    theirs = e.get("split_size") or ours
    given = "" if e.get("split_size") else " (size not given: ours assumed)"
    image_sd, source = None, ""
    if spec.split_noise == "loss":
        ratio = image_loss_ratio(group)
        if _missing(ratio):
            source = f"; per-image loss sd {stats.LOSS_SD_RATIO:g} x the loss (fallback: runs without val_loss_image_std)"
        else:
            image_sd = ratio * our_mean
            source = f"; per-image loss sd {image_sd:.3g} (the runs' own, {ratio:.2f} x the loss)"
    variance = stats.image_var(our_mean, spec.split_noise, spec.factor, image_sd)
    sd = stats.split_term_sd(variance, theirs, ours, seed_sd)
    return sd, (f"interval counts the noise of its {theirs:,}-image split{given} and of our {ours:,} beyond "
                f"our seeds' spread: sd {sd:.3g}{source}")


def image_loss_ratio(group: pd.DataFrame) -> float:
    """Mean over the runs of their per-image validation loss sd over the validation loss it was
    measured at (`val_loss_image_std` / `val_loss_tested`); NaN when no run recorded it."""
    if "val_loss_image_std" not in group or "val_loss_tested" not in group:
        return math.nan
    ratios = pd.to_numeric(group["val_loss_image_std"], errors="coerce") / pd.to_numeric(
        group["val_loss_tested"], errors="coerce")
    ratios = ratios[ratios.notna() & (ratios > 0) & ratios.apply(math.isfinite)]
    return float(ratios.mean()) if len(ratios) else math.nan


def power_words(kind: str, half: float, to_halve: int | None, n: int, gap: float | None = None) -> str:
    """What an interval can tell: its half-width, the seeds that would halve it, and, where the gap
    in question is smaller than the half-width, that this test cannot tell such a gap from noise."""
    if _missing(half):
        return ""
    halve = (f"{to_halve} seeds would halve it" if to_halve else
             "no number of seeds halves it (the runs' own spread sets its floor)")
    words = f"{kind} +-{half:.3g} ({n} seeds; {halve})"
    if gap is not None and not _missing(gap) and abs(gap) < half:
        words += f"; no power to tell a gap of {abs(gap):.3g} from noise"
    return words


def compare_published(published: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per published figure: the figure, our mean/std/CI of the mean/prediction interval in
    the same unit, difference, and the verdict of the metric's kind (score, count or timing)."""
    rows = []
    for e in published:
        spec = metric_spec(e["metric"])
        group = runs[runs["experiment"] == e["experiment"]] if len(runs) else runs
        values = group[spec.column] if spec.column in group else pd.Series(dtype=float)
        summary = _stats(values, spec.factor)
        value = e["value"]
        split_sd, split_words = split_term(e, spec, group, summary["mean"], summary["std"])
        if split_sd:
            summary = _stats(values, spec.factor, split_sd)
        half = stats.half_width(summary)
        to_halve = (stats.seeds_to_halve(stats.pi_half_at(summary["std"], split_sd), summary["n"])
                    if spec.kind == "score" and summary["n"] >= 2 and not _missing(half) else None)
        ran = len(group) > 0
        statuses = group["status"].value_counts().to_dict() if ran else {}
        diff = summary["mean"] - value if value is not None and summary["n"] else math.nan
        scored = spec.kind == "score" and summary["n"] >= 2
        relative = math.nan
        if not ran:
            verdict = "not run"
        elif spec.kind == "count":
            verdict, relative = verdict_count(value, summary["mean"])
        elif spec.kind == "timing":
            verdict = "not judged"
        else:
            verdict = verdict_score(value, summary, spec.better)
        rows.append({
            "source": e["source"],
            "study": e.get("study") or "",
            "label": e["label"],
            "experiment": e["experiment"],
            "metric": e["metric"],
            "metric_description": spec.description,
            "kind": spec.kind,
            "better": spec.better,
            "published": math.nan if value is None else float(value),
            "published_epochs": e.get("epochs"),
            "seeds": summary["n"],
            "runs": len(group),
            "status": ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) if ran else "not run",
            "our_epochs_run_mean": float(group["epochs_run"].mean()) if ran else math.nan,
            "our_epochs_max": int(group["epochs_max"].max()) if ran else None,
            "reproduced_mean": summary["mean"],
            "reproduced_std": summary["std"],
            "reproduced_ci95_low": summary["ci95_low"],
            "reproduced_ci95_high": summary["ci95_high"],
            "reproduced_pi95_low": summary["pi95_low"],
            "reproduced_pi95_high": summary["pi95_high"],
            "split_size": e.get("split_size"),
            "split_sd": split_sd,
            "pi95_half_width": half if scored else math.nan,
            "seeds_to_halve": to_halve,
            "difference": diff,
            "relative_difference": relative,
            "verdict": verdict,
            "published_best_epoch": e.get("best_epoch"),
            "published_epochs_run": e.get("epochs_run"),
            "our_best_epoch_mean": float(group["best_epoch"].mean()) if ran and "best_epoch" in group else math.nan,
            "reading": reading(verdict, spec.better, split_words if ran and summary["n"] else "",
                               _epochs_words(e.get("best_epoch"), group if ran else None, e.get("epochs_run")),
                               power_words("95% prediction interval", half, to_halve, summary["n"], diff)
                               if scored and verdict not in ("too few seeds", "figure only") else ""),
            "note": e.get("note") or "",
        })
    return pd.DataFrame(rows, columns=PUBLISHED_COLUMNS)


PUBLISHED_COLUMNS = [
    "source", "study", "label", "experiment", "metric", "metric_description", "kind", "better",
    "published", "published_epochs", "seeds", "runs", "status", "our_epochs_run_mean",
    "our_epochs_max", "reproduced_mean", "reproduced_std", "reproduced_ci95_low",
    "reproduced_ci95_high", "reproduced_pi95_low", "reproduced_pi95_high", "split_size", "split_sd",
    "pi95_half_width", "seeds_to_halve", "difference",
    "relative_difference", "published_best_epoch", "our_best_epoch_mean", "published_epochs_run", "verdict", "reading", "note",
]


def paired_difference(runs: pd.DataFrame, exp_a: str, exp_b: str, column: str = "test_accuracy",
                      factor: float = 100.0) -> dict:
    """Mean, 95% t-interval and paired t-test p-value of (a - b) over the seeds where both
    experiments have a value."""
    def by_seed(exp: str) -> dict[int, float]:
        rows = runs.loc[runs["experiment"] == exp, ["seed", column]]
        return {int(seed): value for seed, value in zip(rows["seed"], rows[column], strict=True)}

    seeds, diffs = stats.paired_differences(by_seed(exp_a), by_seed(exp_b))
    diffs = diffs * factor
    return {**mean_ci(diffs), "p_value": stats.t_test_p(diffs), "seeds": " ".join(map(str, seeds))}


FINDING_VERDICTS = ("confirmed", "consistent, not established", "contradicted", "too few seeds", "not run")
"""The verdicts of a report's claim (`verdict_effect`), in the order the report counts them."""

FINDING_HELP: dict[str, str] = {
    "confirmed": "our paired difference has the claim's sign and its 95% confidence interval excludes 0 "
    "(and the published difference lies inside the prediction interval).",
    "consistent, not established": "the published difference lies inside our 95% prediction interval "
    "for one published difference, but our confidence interval includes 0 (or the claim is that there "
    "is no difference, which no interval can confirm): the claim may hold, our seeds do not show it.",
    "contradicted": "the published difference lies outside our 95% prediction interval for one "
    "published difference of two single runs, or our confidence interval excludes 0 on the side "
    "opposite to the claim.",
    "too few seeds": f"fewer than {stats.MIN_SEEDS_FOR_VERDICT} seeds have both experiments.",
    "not run": "this config does not run both experiments (config/full.yaml runs them all).",
}

FINDING_COLUMNS = [
    "source", "claim", "a", "b", "metric", "published", "expect", "pairs", "seeds", "mean", "ci95_low",
    "ci95_high", "ci95_half_width", "ci_seeds_to_halve", "pi95_low", "pi95_high", "pi95_half_width",
    "pi_seeds_to_halve", "detectable", "verdict", "reading", "note",
]


def verdict_effect(published: float | None, expect: str, summary: dict) -> str:
    """A claim's verdict from `stats.effect_interval`'s summary of our paired differences (a - b).

    `published` is the report's difference (None for a claim in words only), `expect` its direction:
    higher, lower or none (no difference)."""
    if summary["n"] < stats.MIN_SEEDS_FOR_VERDICT or _missing(summary["ci95_low"]):
        return "too few seeds"
    if published is not None and not summary["pi95_low"] <= published <= summary["pi95_high"]:
        return "contradicted"
    above, below = summary["ci95_low"] > 0, summary["ci95_high"] < 0
    if expect == "none":
        return "contradicted" if (above or below) and published is None else "consistent, not established"
    if (above and expect == "higher") or (below and expect == "lower"):
        return "confirmed"
    if above or below:
        return "contradicted"
    return "consistent, not established"


def _finding_words(verdict: str, published: float | None, expect: str, summary: dict, detect: float,
                   ci_halve: int | None, pi_halve: int | None) -> str:
    parts = []
    above, below = summary["ci95_low"] > 0, summary["ci95_high"] < 0
    if verdict == "contradicted" and published is not None and not (
            summary["pi95_low"] <= published <= summary["pi95_high"]):
        parts.append("the published difference lies outside where one published difference should fall")
        if (above and expect == "higher") or (below and expect == "lower"):
            parts.append("the claim's direction holds (our CI excludes 0 on its side), its size does not")
    elif verdict == "contradicted":
        parts.append("our confidence interval excludes 0 on the side opposite to the claim")
    ci_half = (summary["ci95_high"] - summary["ci95_low"]) / 2
    parts.append(power_words("95% CI", ci_half, ci_halve, summary["n"]))
    pi_half = (summary["pi95_high"] - summary["pi95_low"]) / 2
    if not _missing(pi_half):
        parts.append(power_words("95% prediction interval", pi_half, pi_halve, summary["n"]))
    size = abs(published) if published is not None else None
    if expect == "none":
        shown = (f"ours shows a difference of {summary['mean']:+.3g} (CI excludes 0); " if above or below else "")
        parts.append(f"{shown}a claim of no difference cannot be confirmed; our {summary['n']} pairs detect "
                     f"(80% power) a true difference of {detect:.3g} or more")
    elif size is not None and size < detect:
        parts.append(f"no power for a difference of {size:.3g}: our {summary['n']} pairs detect (80% power) "
                     f"{detect:.3g} or more")
    return "; ".join(p for p in parts if p)


def _by_seed(runs: pd.DataFrame, exp: str, spec: Metric) -> dict[int, float]:
    g = runs.loc[runs["experiment"] == exp, ["seed", spec.column]]
    return {int(k): float(v) * spec.factor for k, v in zip(g["seed"], g[spec.column], strict=True)
            if v is not None and not pd.isna(v)}


def compare_effects(effects: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per claim of `effects` (fmnist.published.load_effects): the published difference a - b,
    our mean paired-by-seed difference with its 95% CI, the 95% prediction interval for one
    published difference of two independent single runs (`stats.effect_interval`), what each can
    tell (half-width, seeds to halve it, the smallest difference our pairs detect), the verdict."""
    rows = []
    have = set(runs["experiment"]) if len(runs) else set()
    for e in effects:
        spec = metric_spec(e["metric"])
        published = None if _missing(e["published"]) else float(e["published"])
        row = {"source": e["source"], "claim": e["claim"], "a": e["a"], "b": e["b"], "metric": e["metric"],
               "published": math.nan if published is None else published, "expect": e["expect"],
               "note": e.get("note") or ""}
        if e["a"] not in have or e["b"] not in have:
            rows.append({**row, "pairs": 0, "verdict": "not run", "reading": ""})
            continue
        a, b = _by_seed(runs, e["a"], spec), _by_seed(runs, e["b"], spec)
        seeds, _ = stats.paired_differences(a, b)
        summary = stats.effect_interval([a[k] for k in seeds], [b[k] for k in seeds])
        verdict = verdict_effect(published, e["expect"], summary)
        n = summary["n"]
        ci_halve = stats.seeds_to_halve(stats.ci_half_at(summary["std"]), n) if n >= 2 and summary["std"] > 0 else None
        pi_halve = (stats.seeds_to_halve(stats.effect_pi_half_at(summary["sd_a"], summary["sd_b"], summary["cov_ab"]), n)
                    if not _missing(summary["pi95_low"]) else None)
        detect = stats.detectable(summary["std"], n)
        rows.append({**row, "pairs": n, "seeds": " ".join(map(str, seeds)), "mean": summary["mean"],
                     "ci95_low": summary["ci95_low"], "ci95_high": summary["ci95_high"],
                     "ci95_half_width": (summary["ci95_high"] - summary["ci95_low"]) / 2,
                     "ci_seeds_to_halve": ci_halve, "pi95_low": summary["pi95_low"],
                     "pi95_high": summary["pi95_high"],
                     "pi95_half_width": (summary["pi95_high"] - summary["pi95_low"]) / 2,
                     "pi_seeds_to_halve": pi_halve, "detectable": detect, "verdict": verdict,
                     "reading": "" if verdict == "too few seeds" else
                     _finding_words(verdict, published, e["expect"], summary, detect, ci_halve, pi_halve)})
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


def finding_counts(findings: pd.DataFrame) -> pd.DataFrame:
    """Per report: how many claims have each verdict (FINDING_VERDICTS, in order) and in all."""
    out = []
    for source in sorted(set(findings["source"])) if len(findings) else []:
        verdicts = findings.loc[findings["source"] == source, "verdict"].tolist()
        out.append({"report": source, **{v: verdicts.count(v) for v in FINDING_VERDICTS}, "claims": len(verdicts)})
    return pd.DataFrame(out, columns=["report", *FINDING_VERDICTS, "claims"])


ALPHA = 1 - stats.LEVEL


def verdict_difference(summary: dict, p_adjusted: float | None = None) -> str:
    """Whether a paired difference is distinguishable from zero: by its Holm-adjusted p-value when
    given (one test of a family), else by its own 95% interval (unadjusted)."""
    if summary["n"] == 0:
        return "no common seed"
    if summary["n"] < 2 or math.isnan(summary["ci95_low"]):
        return "one seed: no interval"
    if p_adjusted is not None:
        if math.isnan(p_adjusted) or p_adjusted >= ALPHA:
            return "no clear difference"
        return "better" if summary["mean"] > 0 else "worse"
    if summary["ci95_low"] > 0:
        return "better"
    if summary["ci95_high"] < 0:
        return "worse"
    return "no clear difference"


def _holm_verdicts(rows: list[dict]) -> None:
    """Adjust the family of `rows` (each with `_summary`) by Holm: p_holm, comparisons, verdicts."""
    adjusted = stats.holm([r["_summary"]["p_value"] for r in rows])
    family = sum(1 for p in adjusted if not math.isnan(p))
    for r, p in zip(rows, adjusted, strict=True):
        summary = r.pop("_summary")
        r["p_value"] = summary["p_value"]
        r["p_holm"] = p
        r["comparisons"] = family
        r["verdict_unadjusted"] = verdict_difference(summary)
        r["verdict"] = verdict_difference(summary, p)


def augmentation_effects(runs: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """For each model and setting: each augmentation's change in test accuracy (points) vs
    `baseline`, paired by seed. The whole table is one family: `comparisons` says how many tests it
    holds and `verdict` uses Holm-adjusted p-values (`verdict_unadjusted`: each interval alone)."""
    rows = []
    if not len(runs):
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    experiments = runs.drop_duplicates("experiment")
    for (model, setting), group in experiments.groupby(["model", "setting"], sort=False):
        base = group[group["augmentation"] == baseline]
        if base.empty:
            continue
        base_exp = base["experiment"].iloc[0]
        for _, row in group[group["augmentation"] != baseline].iterrows():
            summary = paired_difference(runs, row["experiment"], base_exp)
            rows.append({
                "model": model, "setting": setting, "augmentation": row["augmentation"],
                "baseline": baseline, "experiment": row["experiment"], "baseline_experiment": base_exp,
                "pairs": summary["n"], "seeds": summary["seeds"], "difference_mean": summary["mean"],
                "difference_std": summary["std"], "ci95_low": summary["ci95_low"],
                "ci95_high": summary["ci95_high"], "_summary": summary,
            })
    _holm_verdicts(rows)
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


EFFECT_COLUMNS = [
    "model", "setting", "augmentation", "baseline", "experiment", "baseline_experiment", "pairs",
    "seeds", "difference_mean", "difference_std", "ci95_low", "ci95_high", "p_value", "p_holm",
    "comparisons", "verdict_unadjusted", "verdict",
]


def leaderboard(experiments: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The experiments table ranked by mean test accuracy, with each row's paired gap to the top one.
    The gaps are one family (`gap_comparisons` tests): `vs_best` is tied unless the Holm-adjusted
    p-value is below 5%."""
    board = experiments.copy().reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    if not len(board):
        return board
    top = board["experiment"].iloc[0]
    rows = []
    for exp in board["experiment"]:
        if exp == top:
            continue
        summary = paired_difference(runs, exp, top)
        rows.append({"experiment": exp, "gap_to_best": summary["mean"], "gap_ci95_low": summary["ci95_low"],
                     "gap_ci95_high": summary["ci95_high"], "_summary": summary})
    _holm_verdicts(rows)
    names = {"worse": "worse", "no clear difference": "tied", "better": "better"}
    gaps = {r["experiment"]: {
        "gap_to_best": r["gap_to_best"], "gap_ci95_low": r["gap_ci95_low"], "gap_ci95_high": r["gap_ci95_high"],
        "gap_p_holm": r["p_holm"], "gap_comparisons": r["comparisons"],
        "vs_best": names.get(r["verdict"], r["verdict"]),
    } for r in rows}
    best = {"gap_to_best": 0.0, "gap_ci95_low": math.nan, "gap_ci95_high": math.nan, "gap_p_holm": math.nan,
            "gap_comparisons": rows[0]["comparisons"] if rows else 0, "vs_best": "best"}
    table = pd.DataFrame([gaps.get(exp, best) for exp in board["experiment"]], index=board.index)
    return pd.concat([board, table], axis=1)


def config_value(config: dict, key: str):
    """A run config's value at a dotted key: `model.*`/`augmentation.*`/`seed` from the top, anything else under `train`."""
    parts = key.split(".")
    node: Any = config if parts[0] in ("model", "augmentation", "seed", "setting") else config.get("train", {})
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def sweep_table(runs: pd.DataFrame, configs: dict[str, dict], run_ids: list[str], sweep: dict) -> pd.DataFrame:
    """Mean test accuracy (%) with CI per value of the sweep's `x`, one line per group of experiments
    whose resolved configs are equal apart from `x`."""
    key = sweep["x"]
    per_exp: dict[str, dict] = {}
    for rid in run_ids:
        if rid not in configs:
            continue
        cfg = configs[rid]
        try:
            x = config_value(cfg, key)
        except KeyError:
            raise ConfigError(
                f"report.sweeps[{sweep['name']}]: run {rid} has no setting {key!r}. Give x as a dotted key "
                "of the resolved run config: a training key (batch_size, optimizer.lr) or model.args.<arg>."
            ) from None
        exp = rid.rsplit(".s", 1)[0]
        rest = copy.deepcopy({k: v for k, v in cfg.items() if k not in ("id", "seed", "setting")})
        _drop(rest, key)
        per_exp.setdefault(exp, {"x": x, "rest": repr(_canonical(rest)), "model": cfg["model"]["name"],
                                 "augmentation": cfg["augmentation"]["name"]})
    lines: dict[str, str] = {}
    rows = []
    for exp, info in per_exp.items():
        base = f"{info['model']} + {info['augmentation']}"
        if info["rest"] not in lines:
            taken = sum(1 for v in lines.values() if v.split(" #")[0] == base)
            lines[info["rest"]] = base if not taken else f"{base} #{taken + 1}"
        group = runs[runs["experiment"] == exp]
        summary = _stats(group["test_accuracy"], 100.0) if len(group) else mean_ci([])
        rows.append({
            "sweep": sweep["name"], "x_key": key, "x": _label(info["x"]), "x_numeric": _numeric(info["x"]),
            "line": lines[info["rest"]], "experiment": exp, "seeds": summary["n"], "mean": summary["mean"],
            "std": summary["std"], "ci95_low": summary["ci95_low"], "ci95_high": summary["ci95_high"],
        })
    df = pd.DataFrame(rows, columns=["sweep", "x_key", "x", "x_numeric", "line", "experiment", "seeds",
                                     "mean", "std", "ci95_low", "ci95_high"])
    return df.sort_values(["line", "x_numeric"], kind="stable").reset_index(drop=True)


def _drop(cfg: dict, key: str) -> None:
    parts = key.split(".")
    node = cfg if parts[0] in ("model", "augmentation") else cfg.get("train", {})
    for part in parts[:-1]:
        node = node.get(part, {})
    node.pop(parts[-1], None)


def _canonical(obj):
    if isinstance(obj, dict):
        return tuple(sorted((k, _canonical(v)) for k, v in obj.items()))
    if isinstance(obj, list):
        return tuple(_canonical(v) for v in obj)
    return obj


def _label(x) -> str:
    if isinstance(x, list | tuple):
        return "-".join(map(str, x))
    return str(x)


def _numeric(x) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def pareto_front(costs: list[float], gains: list[float]) -> list[bool]:
    """Which points no other point beats: lower-or-equal cost with higher gain (or equal gain, lower cost)."""
    front = []
    for i, (c, g) in enumerate(zip(costs, gains, strict=True)):
        if any(math.isnan(v) for v in (c, g)):
            front.append(False)
            continue
        dominated = any(
            j != i and not math.isnan(c2) and not math.isnan(g2)
            and c2 <= c and g2 >= g and (c2 < c or g2 > g)
            for j, (c2, g2) in enumerate(zip(costs, gains, strict=True))
        )
        front.append(not dominated)
    return front


def confused_pairs(confusion: pd.DataFrame, k: int = 3) -> list[dict]:
    """The k largest off-diagonal cells of a confusion matrix (rows true, columns predicted)."""
    cm = confusion.to_numpy()
    classes = list(confusion.columns)
    totals = cm.sum(axis=1)
    cells = [(int(cm[i, j]), i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1]) if i != j and cm[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": classes[i], "predicted": classes[j], "count": n,
             "fraction": n / totals[i] if totals[i] else math.nan} for n, i, j in cells[:k]]
