"""Every relative link in the repository's Markdown resolves: the file exists and, for `file#anchor`,
the heading does. Also every path written in backticks under a tracked top-level folder
(`config/...`, `docs/...`, `src/...`) and every backticked `*.md` name exists, since the README once
pointed at `DESIGN.md`, `facts.md` and `config/schema.yaml`, none of which existed.

What is left out, and why: links to the web are not fetched (the tests have no network); paths with
placeholders (`<run>`, `*`, `{...}`) and paths under folders that runs create (`results/`, `logs/`)
are not files of the checkout. A record's `summary.html` is copied in by `record export` once every
run has finished, so a link to it is allowed while that record's headline says it is in progress."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest
from conftest import REPO

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
# Folders of the checkout a backticked path may name; what runs create (results/, logs/) is not here.
TRACKED_DIRS = ("config/", "docs/", "src/", "tests/", "workflow/", "profiles/", "envs/")
PLACEHOLDER = re.compile(r"[<>*{}$\[\]|]|\.\.\.")


def tracked_markdown(repo: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=repo, capture_output=True, text=True, check=True)
    return [repo / line for line in out.stdout.splitlines() if (repo / line).exists()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*?|__?", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return frozenset(out)


def pending_record_file(repo: Path, target: Path) -> bool:
    """A record's summary.html, not yet there because the record's headline says it is in progress."""
    try:
        rel = target.relative_to(repo / "docs" / "record")
    except ValueError:
        return False
    headline = repo / "docs" / "record" / rel.parent / "headline.md"
    return (target.name == "summary.html" and headline.exists()
            and "Status: in progress" in headline.read_text())


def link_problems(md: Path, repo: Path) -> list[str]:
    """Each dangling relative link or backticked path of one Markdown file, as 'file:line: problem'."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), md.read_text())
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{md.relative_to(repo)}:{lineno}"
        for m in LINK.finditer(line):
            problems += _link_problem(md, repo, m.group(1), where)
        for m in CODE_SPAN.finditer(LINK.sub("", line)):
            problems += _code_path_problem(md, repo, m.group(1).strip(), where)
    return problems


def _link_problem(md: Path, repo: Path, target: str, where: str) -> list[str]:
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return []
    path, _, anchor = target.partition("#")
    dest = (md.parent / path).resolve() if path else md
    if not dest.exists():
        if pending_record_file(repo, dest):
            return []
        return [f"{where}: link to {target!r}: no such file ({dest.relative_to(repo) if dest.is_relative_to(repo) else dest})"]
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return [f"{where}: link to {target!r}: {dest.name} has no heading with anchor #{anchor}"]
    return []


def _code_path_problem(md: Path, repo: Path, span: str, where: str) -> list[str]:
    if " " in span or PLACEHOLDER.search(span) or span.startswith(("http", "/", "~")):
        return []
    path = span.split("::")[0].rstrip("/")
    if path.startswith(TRACKED_DIRS):
        candidates = [repo / path]
    elif path.endswith(".md") and "/" not in path:
        candidates = [md.parent / path, repo / path]
    else:
        return []
    if any(c.exists() for c in candidates):
        return []
    return [f"{where}: `{span}` names no file of the repository"]


def test_every_relative_link_and_named_path_in_markdown_resolves():
    problems = [p for md in tracked_markdown(REPO) for p in link_problems(md, REPO)]
    assert not problems, "dangling references in Markdown:\n" + "\n".join(problems)


@pytest.mark.parametrize("text, expected", [
    ("[the design](DESIGN.md)", "no such file"),
    ("see `facts.md` for this", "names no file"),
    ("keys in `config/schema.yaml`", "names no file"),
    ("[read it](docs/guide.md#how-to-read-it)", "has no heading"),
    ("[self](#no-such-section)", "has no heading"),
])
def test_a_dangling_reference_is_named(tmp_path, text, expected):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## How to read the report\n")
    md = tmp_path / "README.md"
    md.write_text(f"# Title\n\n{text}\n")
    (problem,) = link_problems(md, tmp_path)
    assert problem.startswith("README.md:3:") and expected in problem


def test_links_that_resolve_and_code_blocks_are_not_flagged(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## How to read `it`: the report\n\n## Notes\n\n## Notes\n")
    md = tmp_path / "README.md"
    md.write_text("# Title\n\n[g](docs/guide.md#how-to-read-it-the-report) [n](docs/guide.md#notes-1) "
                  "[web](https://example.org/x.md) `results/runs/<run>/metrics.json` [t](#title)\n\n"
                  "```\n[not a link](missing.md) `docs/missing.md`\n```\n")
    assert link_problems(md, tmp_path) == []


def test_a_record_summary_is_allowed_only_while_the_record_is_in_progress(tmp_path):
    record = tmp_path / "docs" / "record" / "cpu"
    record.mkdir(parents=True)
    md = tmp_path / "README.md"
    md.write_text("[report](docs/record/cpu/summary.html)\n")
    (record / "headline.md").write_text("**Status: in progress** — 6 of 30 runs finished\n")
    assert link_problems(md, tmp_path) == []
    (record / "headline.md").write_text("**Status: complete** — 30 of 30 runs finished\n")
    assert "no such file" in link_problems(md, tmp_path)[0]


# --- the comments and docstrings of the code, the configs and the workflow ------------------------
# What they name must exist too: a repository path (`config/schema.yaml`), a Markdown file by its name
# (`STUDY.md`), or a section of the README ("the README's "Configuration" section", "(README,
# Reliability)"). Strings the code uses are left to its tests; comments and docstrings have none.
COMMENTED = ("config", "docs", "src", "workflow", "profiles", "containers", ".test")
COMMENTED_FILES = ("Snakefile", "Makefile", ".snakemake-workflow-catalog.yml")
REPO_PATH = re.compile(r"(?<![\w./-])((?:config|docs|src|tests|workflow|profiles|containers)/[\w./-]*[\w/])")
MD_NAME = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
README_SECTION = re.compile(r"README(?:'s)?,? (?:section )?\"([^\"]+)\"|\bREADME, ([A-Z][\w -]*)\)")
# Record runs (data, not prose), and what a command builds from the checkout (the container image).
UNCHECKED = ("docs/record/cpu/runs/", "docs/record/cpu/b_valloss/runs/")
BUILT = ("containers/fmnist.sif",)


def commented_files(repo: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *COMMENTED, *COMMENTED_FILES], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    keep = (".py", ".smk", ".yaml", ".yml", ".sh", ".def", ".j2", ".toml", ".cfg")
    return [repo / f for f in out if (f.endswith(keep) or Path(f).name in COMMENTED_FILES)
            and not f.startswith(UNCHECKED) and (repo / f).is_file()]


def comment_text(path: Path) -> list[tuple[int, str]]:
    """(line, text) of a file's comments, and for Python its docstrings too."""
    text = path.read_text(errors="replace")
    if path.suffix == ".py":
        import ast
        import io
        import tokenize

        out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
               if tok.type == tokenize.COMMENT]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=False)
                if doc and node.body:
                    start = node.body[0].lineno
                    out += [(start + i, line) for i, line in enumerate(doc.splitlines())]
        return out
    if path.suffix == ".j2":
        return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"\{#(.*?)#\}", text, re.S)]
    return [(i, m.group(1)) for i, line in enumerate(text.splitlines(), 1)
            if (m := re.search(r"(?:^|\s)#\s?(.*)$", line))]


@cache
def tracked_names(repo: Path) -> frozenset[str]:
    """The file names of the checkout (a Markdown file named alone, such as headline.md, is one of a
    record's files or a document's)."""
    out = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout  # empty outside git
    names = {Path(f).name for f in out.splitlines()}
    return frozenset(names | {p.name for p in repo.rglob("*.md") if ".git" not in p.parts and ".venv" not in p.parts})


def readme_sections(repo: Path) -> list[str]:
    return [re.sub(r"[`*]", "", m.group(1)).strip().lower()
            for m in re.finditer(r"^#{1,6}\s+(.*)$", FENCE.sub("", (repo / "README.md").read_text()), re.M)]


def comment_problems(path: Path, repo: Path) -> list[str]:
    problems = []
    sections = None
    for lineno, text in comment_text(path):
        where = f"{path.relative_to(repo)}:{lineno}"
        for m in REPO_PATH.finditer(text):
            ref = m.group(1).rstrip(".")
            if PLACEHOLDER.search(text[m.end():m.end() + 1]) or not ref:
                continue
            if not (repo / ref).exists() and ref not in BUILT:
                problems.append(f"{where}: names {ref!r}, which is not in the repository")
        for m in MD_NAME.finditer(text):
            name = m.group(1)
            if name not in tracked_names(repo):
                problems.append(f"{where}: names {name!r}, which is not in the repository")
        for m in README_SECTION.finditer(text):
            wanted = (m.group(1) or m.group(2)).strip().lower()
            sections = sections if sections is not None else readme_sections(repo)
            if not any(wanted in s for s in sections):
                problems.append(f"{where}: names the README's section {wanted!r}, which it does not have")
    return problems


def test_every_path_and_readme_section_named_in_comments_exists():
    problems = [p for f in commented_files(REPO) for p in comment_problems(f, REPO)]
    assert not problems, "dangling references in comments and docstrings:\n" + "\n".join(problems)


@pytest.mark.parametrize("text, expected", [
    ("# every key documented in config/schema.yaml", "'config/schema.yaml', which is not"),
    ("# the five reports (STUDY.md)", "'STUDY.md', which is not"),
    ("# see the README's \"Configuration\" section", "section 'configuration'"),
    ("# fits 15 minutes (README, Performance)", "section 'performance'"),
])
def test_a_dangling_reference_in_a_comment_is_named(tmp_path, text, expected):
    (tmp_path / "README.md").write_text("# Title\n\n## Quick start\n")
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "x.yaml"
    cfg.write_text(f"a: 1\n{text}\n")
    (problem,) = comment_problems(cfg, tmp_path)
    assert problem.startswith("config/x.yaml:2:") and expected in problem


def test_references_that_exist_are_not_flagged_in_comments(tmp_path):
    (tmp_path / "README.md").write_text("# Title\n\n## Quick start (a fresh machine)\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "README.md").write_text("# Config\n")
    py = tmp_path / "config" / "x.py"
    py.write_text('"""Reads config/README.md and results/runs/<run>/ (the README, "Quick start")."""\n'
                  "x = 'config/missing.yaml'  # a string of the code, not a comment: its tests check it\n")
    assert comment_problems(py, tmp_path) == []
