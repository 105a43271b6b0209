"""The lock (requirements.lock) and what is made from it: the conda environment of the jobs, the
wheelhouse of an offline compute node, and the one pinned line that bootstraps uv.

    python tools/lockfile.py env                 # rewrite workflow/envs/fmnist.yaml from the lock
    python tools/lockfile.py select [--extras cluster] [--exclude "torch pulp"] [--python 3.12]
                                                 # a hashed requirements file (default: for this Python)
    python tools/lockfile.py pin uv              # the lock's entry for one package, hashes included
    python tools/lockfile.py wheelhouse --out wheelhouse --python 3.12 \
        --platform manylinux_2_28_x86_64 --extras cluster --exclude "torch torchvision numpy pulp"

The lock is written by `make lock` (uv pip compile --universal --generate-hashes): every package of
pyproject.toml's dependencies and extras, with its version, its environment marker, the sha256 of
every file PyPI has for that version, and the packages that need it (`# via`). A selection starts
from pyproject's direct dependencies (plus the chosen extras and the build backend) and follows the
`# via` edges, leaving out what `--exclude` names and everything only those need: a node that has
torch has torch's CUDA libraries too. Standard library and `packaging` only.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.markers import Marker, default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # a bare Python with pip only (a login node): pip carries its own copy
    from pip._vendor.packaging.markers import Marker, default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
BUILD_IN = REPO / "tools" / "build-requirements.in"
ENV_FILE = REPO / "workflow" / "envs" / "fmnist.yaml"
ENV_PYTHON = "3.11"  # the conda env's Python: pyproject's requires-python floor, what CI tests
# A wheel built here from an sdist gets fixed zip timestamps, so the same lock gives the same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold


class LockError(Exception):
    """The lock, pyproject.toml or a selection disagree; the message names the fix."""


@dataclass
class Entry:
    name: str  # canonical
    version: str
    marker: str  # "" when the package is needed everywhere
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)  # canonical names of the packages that need it

    def applies(self, env: dict[str, str] | None) -> bool:
        return env is None or not self.marker or Marker(self.marker).evaluate(env)

    def requirement(self, marker: bool = True, hashes: bool = True) -> str:
        line = f"{self.name}=={self.version}"
        if marker and self.marker:
            line += f" ; {self.marker}"
        if hashes:
            line += "".join(f" --hash=sha256:{h}" for h in self.hashes)
        return line


_HEAD = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.*?))?\s*\\?$")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def parse(text: str) -> dict[str, Entry]:
    """requirements.lock (uv's `--generate-hashes` output) -> canonical name -> Entry."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not raw[0].isspace() and not line.startswith("#"):
            m = _HEAD.match(line)
            if not m:
                raise LockError(
                    f"requirements.lock line {n}: {raw!r} is not `name==version`; rerun `make lock`"
                )
            current = Entry(canonicalize_name(m.group(1)), m.group(2), (m.group(3) or "").strip())
            if current.name in entries:
                raise LockError(
                    f"requirements.lock pins {current.name} twice (a fork by marker); "
                    "tools/lockfile.py handles one version per package: narrow pyproject's ranges"
                )
            entries[current.name] = current
            in_via = False
            continue
        if current is None:
            continue  # the header
        if line.startswith("--hash="):
            current.hashes += _HASH.findall(line)
        elif line.startswith("# via"):
            rest = line[len("# via") :].strip()
            in_via = not rest
            if rest:
                current.via.append(_parent(rest))
        elif in_via and line.startswith("#"):
            current.via.append(_parent(line.lstrip("#").strip()))
    for e in entries.values():
        if not e.hashes:
            raise LockError(
                f"requirements.lock: {e.name} has no --hash; rerun `make lock` (it adds them)"
            )
    return entries


def _parent(text: str) -> str:
    """`snakemake`, `fmnist (pyproject.toml)`, `-r tools/build-requirements.in` -> a node name."""
    if text.startswith("-r ") or text.startswith("-c "):
        return text
    return canonicalize_name(text.split(" ")[0]) if " (" in text else canonicalize_name(text)


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def direct(
    pyproject: dict, extras: list[str] | tuple[str, ...] = (), build: bool = True
) -> list[Requirement]:
    """pyproject's dependencies, the named extras and (build=True) the build backend's requirements."""
    proj = pyproject["project"]
    unknown = sorted(set(extras) - set(proj.get("optional-dependencies", {})))
    if unknown:
        known = ", ".join(sorted(proj.get("optional-dependencies", {})))
        raise LockError(f"no extra {unknown} in pyproject.toml (its extras: {known})")
    reqs = [Requirement(r) for r in proj["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in proj["optional-dependencies"][extra]]
    if build:
        reqs += [Requirement(r) for r in pyproject["build-system"]["requires"]]
    return reqs


def target_env(python: str, sys_platform: str = "linux", machine: str = "x86_64") -> dict[str, str]:
    """The marker environment of a CPython `python` (e.g. "3.12") on a Linux machine."""
    full = python if python.count(".") >= 2 else f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}.get(
            sys_platform, sys_platform
        ),
        "platform_version": "",
        "python_full_version": full,
        "python_version": ".".join(full.split(".")[:2]),
        "sys_platform": sys_platform,
        "extra": "",
    }


def select(
    entries: dict[str, Entry],
    roots: list[str],
    env: dict[str, str] | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    drop: list[str] | tuple[str, ...] = (),
) -> list[Entry]:
    """The locked packages reachable from `roots` through `# via`, not through an excluded one;
    `drop` (name patterns, `nvidia-*`) removes packages but keeps what they need."""
    excluded = {canonicalize_name(x) for x in exclude}
    missing = sorted(excluded - set(entries))
    if missing:
        raise LockError(
            f"--exclude names {missing}, which requirements.lock does not hold (a typo?)"
        )
    for pattern in drop:
        if not fnmatch.filter(
            entries, canonicalize_name(pattern.rstrip("*")) + ("*" if pattern.endswith("*") else "")
        ):
            raise LockError(f"--drop {pattern!r} matches nothing in requirements.lock (a typo?)")
    children: dict[str, list[str]] = {}
    for e in entries.values():
        for parent in e.via:
            children.setdefault(parent, []).append(e.name)
    todo = [canonicalize_name(r) for r in roots]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in excluded:
            continue
        if name not in entries:
            raise LockError(f"{name} is not in requirements.lock: run `make lock`")
        if not entries[name].applies(env):
            continue
        seen.add(name)
        todo += children.get(name, [])
    dropped = {
        n
        for n in seen
        for p in drop
        if fnmatch.fnmatch(n, canonicalize_name(p.rstrip("*")) + ("*" if p.endswith("*") else ""))
    }
    return [entries[n] for n in sorted(seen - dropped)]


def read_lock(path: Path = LOCK) -> dict[str, Entry]:
    if not path.is_file():
        raise LockError(f"{path} is missing: run `make lock`")
    return parse(path.read_text())


# ---- workflow/envs/fmnist.yaml -----------------------------------------------------------------

ENV_HEADER = """\
# Conda environment of every job under `snakemake --sdm conda`. Written by `make lock` from
# requirements.lock (python tools/lockfile.py env): do not edit by hand. It holds the lock's
# entries for pyproject.toml's [project.dependencies] and everything they need, each pinned with its
# hashes, so a job gets the very files `make setup` installs; tests/test_envs.py fails when the two
# disagree. The packages come from PyPI through pip (the same torch and torchvision builds as the
# venv); conda brings Python. The fmnist library itself is found by the workflow scripts in the
# checkout's src/.
"""


def env_yaml(entries: dict[str, Entry], pyproject: dict) -> str:
    roots = [r.name for r in direct(pyproject, build=False)]
    lines = [
        ENV_HEADER,
        "name: fmnist",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
    ]
    lines += [f"  - python ={ENV_PYTHON}", "  - pip", "  - pip:"]
    for e in select(entries, roots):
        # one pip requirement per line, markers and hashes on it, as a requirements file takes them
        lines.append(f'      - "{e.requirement()}"')
    return "\n".join(lines) + "\n"


# ---- the wheelhouse ----------------------------------------------------------------------------


def expand_platforms(platforms: list[str]) -> list[str]:
    """pip takes a --platform tag literally; a machine with glibc 2.28 also runs manylinux_2_17
    (manylinux2014), manylinux_2_12 (2010) and manylinux_2_5 (1) wheels: list them all."""
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    out: list[str] = []
    for p in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", p) or re.fullmatch(
            r"(manylinux2014|manylinux2010|manylinux1)_(\w+)", p
        )
        if not m:
            out.append(p)
            continue
        glibc = int(m.group(1)) if m.group(1).isdigit() else legacy[m.group(1)]
        arch = m.group(2)
        out += [f"manylinux_2_{x}_{arch}" for x in range(glibc, 4, -1)]
        out += [f"{name}_{arch}" for name, x in legacy.items() if x <= glibc]
    return list(dict.fromkeys(out))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_wheelhouse(
    out: Path,
    python: str,
    platforms: list[str],
    extras: list[str],
    exclude: list[str],
    drop: list[str] = (),
    pip: list[str] | None = None,
) -> tuple[list[Path], int]:
    """Download (hash-checked) the wheels a node needs; build the pure-Python ones PyPI has only as
    sdists; write out/requirements.txt with the sha256 of each file. Returns (files, bytes)."""
    pip = pip or [sys.executable, "-m", "pip"]
    entries = read_lock()
    pyproject = project()
    env = target_env(python)
    roots = [r.name for r in direct(pyproject, extras)]
    chosen = select(entries, roots, env, exclude, drop)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tag = python.replace(".", "")[:3]
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        tmp = Path(tmp)
        req = tmp / "requirements.txt"
        req.write_text("\n".join(e.requirement(marker=False) for e in chosen) + "\n")
        platform_args = [a for p in expand_platforms(platforms) for a in ("--platform", p)]
        # --no-deps: the selection is the closure already. Without --only-binary, pip takes an sdist
        # only where PyPI has no wheel for the target; those are built below and must be pure Python.
        cmd = [*pip, "download", "--no-deps", "--require-hashes", "--python-version", python,
               "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none",
               *platform_args, "-d", str(tmp / "dl"), "-r", str(req)]  # fmt: skip
        subprocess.run(cmd, check=True)
        for f in sorted((tmp / "dl").iterdir()):
            if f.suffix == ".whl":
                shutil.move(f, out / f.name)
                continue
            build = tmp / "build"
            env_vars = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0"}
            subprocess.run(
                [*pip, "wheel", "--no-deps", "--no-cache-dir", "-w", str(build), str(f)], check=True, env=env_vars
            )
            for w in build.glob("*.whl"):
                _, _, _, tags = parse_wheel_filename(w.name)
                if any(t.platform != "any" or t.abi != "none" for t in tags):
                    raise LockError(
                        f"{f.name}: PyPI has no wheel for Python {python} on {platforms}, and the "
                        f"one built here ({w.name}) is for this machine only; leave it out (--exclude) "
                        "if the node has it, or build the wheelhouse on a machine like the node"
                    )
                shutil.move(w, out / w.name)
    files = sorted(out.glob("*.whl"))
    by_name = {canonicalize_name(parse_wheel_filename(f.name)[0]): f for f in files}
    missing = sorted({e.name for e in chosen} - set(by_name))
    if missing:
        raise LockError(f"no wheel came for {missing}")
    lines = [
        "# The wheelhouse's own requirements, from requirements.lock (tools/lockfile.py wheelhouse):",
        f"# Python {python}, platform {' '.join(platforms)}, extras [{','.join(extras)}], "
        f"left out: {' '.join(exclude) or 'nothing'}. Install with `make offline-install`.",
    ]
    for e in chosen:
        f = by_name[e.name]
        h = sha256(f)
        built = h not in e.hashes  # a wheel built here from the sdist the lock pins
        lines.append(
            f"{e.name}=={e.version} --hash=sha256:{h}"
            + ("  # built here from the locked sdist" if built else "")
        )
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    return files, sum(f.stat().st_size for f in files)


def _words(values: list[str] | None) -> list[str]:
    return [w for v in values or [] for w in v.replace(",", " ").split()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="rewrite workflow/envs/fmnist.yaml from the lock")
    p = sub.add_parser("pin", help="print one package's lock entry (a hashed requirement line)")
    p.add_argument("name")
    s = sub.add_parser("select", help="print a hashed requirements file for a node")
    w = sub.add_parser("wheelhouse", help="download/build the wheels a node needs")
    for q in (s, w):
        q.add_argument(
            "--extras", action="append", help="pyproject extras (space or comma separated)"
        )
        q.add_argument(
            "--exclude", action="append", help="packages the node has (and what only they need)"
        )
        q.add_argument(
            "--drop",
            action="append",
            help="packages to leave out, keeping what they need (patterns: nvidia-*)",
        )
        q.add_argument(
            "--python", help="CPython version of the target (default: this Python, on this machine)"
        )
    w.add_argument(
        "--platform",
        action="append",
        help="the node's platform tag, e.g. manylinux_2_28_x86_64 (glibc 2.28, as torch needs)",
    )
    w.add_argument("--out", type=Path, default=REPO / "wheelhouse")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "env":
            ENV_FILE.write_text(env_yaml(read_lock(), project()))
            print(f"wrote {ENV_FILE.relative_to(REPO)}")
        elif args.cmd == "pin":
            entries = read_lock()
            name = canonicalize_name(args.name)
            if name not in entries:
                raise LockError(f"{args.name} is not in requirements.lock")
            print(entries[name].requirement(marker=False))
        elif args.cmd == "select":
            roots = [r.name for r in direct(project(), _words(args.extras))]
            env = target_env(args.python) if args.python else dict(default_environment(), extra="")
            chosen = select(read_lock(), roots, env, _words(args.exclude), _words(args.drop))
            print("\n".join(e.requirement(marker=False) for e in chosen))
        else:
            platforms = _words(args.platform) or ["manylinux_2_28_x86_64"]
            args.python = args.python or "3.12"
            t0 = time.monotonic()
            files, size = build_wheelhouse(
                args.out,
                args.python,
                platforms,
                _words(args.extras),
                _words(args.exclude),
                _words(args.drop),
            )
            print(
                f"wheelhouse {args.out}: {len(files)} wheels, {size / 2**20:.1f} MiB "
                f"(Python {args.python}, {' '.join(platforms)}), made in {time.monotonic() - t0:.0f} s"
            )
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
