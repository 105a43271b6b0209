"""A record's text: the status line, headline, findings and provenance tables that `fmnist.record.rebuild`
writes as markdown from the record's runs, and the README blocks that show them between
<!-- record:<name>:start/end --> markers (`fmnist record export --readme`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from fmnist import aggregate, compare

HEADLINE_COLUMNS = ["report", "figure", "metric", "published", "seeds", "reproduced mean",
                    "95% prediction interval", "verdict", "half-width (seeds to halve it)"]

BLOCKS = {"": "headline.md", ":findings": "findings.md", ":provenance": "provenance.md"}
"""README block suffix -> the generated file it shows: <!-- record:<name><suffix>:start --> ... end.
The headline's block is required in every README named on export; the others are filled where a
README has their markers."""


FINDINGS_COLUMNS = ["report", "claim", "a - b", "metric", "published", "ours (pairs)", "95% CI",
                    "95% prediction interval", "verdict", "what it can tell"]


def findings_markdown(findings: pd.DataFrame) -> str:
    """The reports' claims the record judges (both experiments run): a count per report, then one row
    per claim judged; every number from `compare.compare_effects`."""
    counts = compare.finding_counts(findings)
    judged = findings[findings["verdict"] != "not run"] if len(findings) else findings
    rows = []
    for r in judged.itertuples(index=False):
        digits = 3 if "loss" in r.metric else 2

        def signed(x, digits=digits):
            return "" if _nan(x) else f"{x:+.{digits}f}"
        rows.append({
            "report": r.source, "claim": r.claim, "a - b": f"{r.a} - {r.b}", "metric": r.metric,
            "published": signed(r.published) if not _nan(r.published) else f"in words: {r.expect}",
            "ours (pairs)": f"{signed(r.mean)} ({int(r.pairs)})" if r.pairs else "",
            "95% CI": f"{signed(r.ci95_low)} to {signed(r.ci95_high)}" if not _nan(r.ci95_low) else "",
            "95% prediction interval": f"{signed(r.pi95_low)} to {signed(r.pi95_high)}" if not _nan(r.pi95_low) else "",
            "verdict": r.verdict, "what it can tell": r.reading if isinstance(r.reading, str) else "",
        })
    return (aggregate.to_markdown(counts) + "\n\n"
            + aggregate.to_markdown(pd.DataFrame(rows, columns=FINDINGS_COLUMNS)))


PROVENANCE_COLUMNS = ["run", "commit", "code identity", "machine", "device", "start (UTC)", "end (UTC)",
                      "pauses", "training (s)"]


UNKNOWN = "not recorded"


def provenance_markdown(metric_paths: list[Path]) -> str:
    """One row per run, from its metrics.json only: the commit, code identity and machine it ran on,
    its start and end, the pauses between the processes that trained it, its training seconds. A run
    written before metrics.json recorded `provenance` says "not recorded" there."""
    rows = []
    for path in metric_paths:
        m = json.loads(Path(path).read_text())
        prov = m.get("provenance") or {}
        pauses = prov.get("pauses")
        rows.append({
            "run": m["run_id"], "commit": prov.get("commit") or UNKNOWN, "code identity": m.get("config_hash") or UNKNOWN,
            "machine": prov.get("machine") or UNKNOWN, "device": m.get("device_name") or m.get("device") or UNKNOWN,
            "start (UTC)": prov.get("started") or UNKNOWN, "end (UTC)": prov.get("finished") or UNKNOWN,
            "pauses": UNKNOWN if pauses is None else (
                "none" if not pauses else "; ".join(f"{p.get('from')} to {p.get('to')}" for p in pauses)),
            "training (s)": _fmt(m.get("train_seconds"), 0),
        })
    return aggregate.to_markdown(pd.DataFrame(rows, columns=PROVENANCE_COLUMNS))


def status_line(finished: int, total: int, train_seconds: float) -> str:
    """The record's state in one line, computed from its runs (so the READMEs cannot claim more)."""
    state = "complete" if finished >= total else "in progress"
    return (f"**Status: {state}** — {finished} of {total} runs finished; "
            f"{train_seconds / 3600:.1f} hours of training in all (the sum of the runs' `train_seconds`, "
            f"one thread each).")


def headline(published: pd.DataFrame, experiments_covered: set[str]) -> pd.DataFrame:
    """The published figures of the experiments the record runs: figure, published, reproduced mean,
    prediction interval, verdict."""
    rows = []
    table = published[published["experiment"].isin(experiments_covered)]
    for r in table.itertuples(index=False):
        unit = 0 if r.kind == "count" else (3 if "loss" in r.metric else 2)
        rows.append({
            "report": r.source,
            "figure": r.label,
            "metric": r.metric,
            "published": _fmt(r.published, unit),
            "seeds": int(r.seeds),
            "reproduced mean": _fmt(r.reproduced_mean, unit),
            "95% prediction interval": (
                f"{_fmt(r.reproduced_pi95_low, unit)} - {_fmt(r.reproduced_pi95_high, unit)}"
                if r.kind == "score" and not _nan(r.reproduced_pi95_low) else ""
            ),
            "verdict": r.verdict,
            "half-width (seeds to halve it)": _halving(r, unit),
        })
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _halving(r, digits: int) -> str:
    """A score's prediction-interval half-width and the seeds that would halve it ("none do": the
    runs' own spread sets its floor); blank where the row has no interval."""
    half = getattr(r, "pi95_half_width", math.nan)
    if r.kind != "score" or _nan(half):
        return ""
    seeds = getattr(r, "seeds_to_halve", None)
    return f"{_fmt(half, digits)} ({'none do' if _nan(seeds) else int(seeds)})"


def headline_markdown(published: pd.DataFrame, experiments_covered: set[str]) -> str:
    return aggregate.to_markdown(headline(published, experiments_covered))


README_MARKERS = ("<!-- record:{name}:start -->", "<!-- record:{name}:end -->")


def _split_readme(text: str, name: str) -> tuple[str, str, str, str, str] | None:
    """(before, start marker, block, end marker, after) of a README's record block, None without it."""
    start, end = (m.format(name=name) for m in README_MARKERS)
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    block, tail = rest.split(end, 1)
    return head, start, block, end, tail


def readme_block(readme: Path | str, name: str) -> str | None:
    """The record table the README shows between its markers, or None without them."""
    parts = _split_readme(Path(readme).read_text(), name)
    return None if parts is None else parts[2].strip("\n")


def readme_problem(readme: Path | str, name: str) -> str | None:
    """Why `readme` cannot show the record's table (it or its markers are missing); None when it can."""
    if Path(readme).exists() and readme_block(readme, name) is not None:
        return None
    start, end = (m.format(name=name) for m in README_MARKERS)
    return f"{readme} has no {start} ... {end} markers; add them where the record's table goes"


def update_readme(readme: Path | str, name: str, table: str) -> None:
    """Put a record's headline table between the README's markers."""
    readme = Path(readme)
    parts = _split_readme(readme.read_text(), name) if readme.exists() else None
    if parts is None:
        raise ValueError(readme_problem(readme, name))
    head, start, _, end, tail = parts
    readme.write_text(f"{head}{start}\n{table.strip()}\n{end}{tail}")


def update_readme_blocks(readme: Path | str, name: str, record: Path | str) -> list[str]:
    """Fill every block of BLOCKS that `readme` has markers for with the record's generated file;
    the names of the blocks filled (the headline's is required: see `update_readme`)."""
    filled = []
    for suffix, filename in BLOCKS.items():
        if suffix and _split_readme(Path(readme).read_text(), name + suffix) is None:
            continue
        update_readme(readme, name + suffix, (Path(record) / filename).read_text())
        filled.append(name + suffix)
    return filled


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x, digits: int) -> str:
    if _nan(x):
        return ""
    return f"{x:,.0f}" if digits == 0 else f"{x:.{digits}f}"
