"""Check a release tag against fmnist.__version__ and CHANGELOG.md, and print that version's notes.

Usage: python .github/release_notes.py v0.2.0 > notes.md   (CI's release job; tests/test_packaging.py)

fmnist.__version__ (src/fmnist/__init__.py) is the one place the version is written; pyproject.toml
reads it from there. CHANGELOG.md must have a `## [X.Y.Z] - YYYY-MM-DD` section for it, the newest
released one, and the tag must be `vX.Y.Z`.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})\s*$", re.M)


def package_version(repo: Path = REPO) -> str:
    """fmnist.__version__, read from the source without importing the package."""
    tree = ast.parse((repo / "src" / "fmnist" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("src/fmnist/__init__.py does not set __version__")


def releases(changelog: str) -> list[tuple[str, str]]:
    """(version, date) of each released section, newest first as written."""
    return RELEASE.findall(changelog)


def notes(changelog: str, version: str) -> str:
    """The body of `version`'s section."""
    m = re.search(rf"^## \[{re.escape(version)}\] - .*$", changelog, re.M)
    if not m:
        raise SystemExit(f"CHANGELOG.md has no `## [{version}] - YYYY-MM-DD` section")
    rest = changelog[m.end():]
    end = re.search(r"^## \[", rest, re.M)
    return rest[: end.start() if end else len(rest)].strip()


def check(tag: str | None = None, repo: Path = REPO) -> str:
    """The version's notes, after checking the tag, __version__ and CHANGELOG.md agree."""
    version = package_version(repo)
    changelog = (repo / "CHANGELOG.md").read_text()
    released = releases(changelog)
    if not released or released[0][0] != version:
        newest = released[0][0] if released else "none"
        raise SystemExit(
            f"fmnist.__version__ is {version} but CHANGELOG.md's newest release is {newest}: "
            f"add a `## [{version}] - YYYY-MM-DD` section above the others (or fix __version__)"
        )
    if tag is not None and tag != f"v{version}":
        raise SystemExit(f"tag {tag} does not name fmnist.__version__ {version} (expected v{version})")
    return notes(changelog, version)


if __name__ == "__main__":
    print(check(sys.argv[1] if len(sys.argv) > 1 else None))
