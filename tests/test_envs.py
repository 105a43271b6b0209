"""One lock for every install: requirements.lock holds pyproject.toml's dependencies within their
ranges; workflow/envs/fmnist.yaml (`--sdm conda`), the container, the GitHub workflow's Snakemake and
the test venv take their versions from it (tools/lockfile.py, `make lock`)."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(REPO / "tools"))
import lockfile  # noqa: E402

ENV = REPO / "workflow" / "envs" / "fmnist.yaml"
CONTAINER = REPO / "containers" / "fmnist.def"
GITHUB = REPO / ".github" / "workflows" / "main.yml"
EXACT = {"torch": "2.14.1", "torchvision": "0.29.1"}  # the study's numbers were made with these


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def lock() -> dict[str, lockfile.Entry]:
    return lockfile.read_lock()


def check_lock(entries: dict[str, lockfile.Entry], project: dict) -> None:
    """Every direct requirement (dependencies, every extra, the build backend) is locked within its
    range; torch and torchvision are pinned exactly, in pyproject and in the lock."""
    extras = sorted(project["project"].get("optional-dependencies", {}))
    for req in lockfile.direct(project, extras):
        name = canonicalize_name(req.name)
        assert name in entries, f"requirements.lock lacks {req} (pyproject.toml): run `make lock`"
        version = entries[name].version
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject's {req}: run `make lock`"
        )
    for name, version in EXACT.items():
        spec = next(
            r for r in lockfile.direct(project) if canonicalize_name(r.name) == name
        ).specifier
        assert str(spec) == f"=={version}", (
            f"pyproject.toml must pin {name}=={version}, not {name}{spec}"
        )
        assert entries[name].version == version, (
            f"requirements.lock pins {name}=={entries[name].version}, not {version}"
        )


def test_lock_holds_pyproject():
    check_lock(lock(), pyproject())


def test_lock_drift_is_noticed():
    """A dependency added to pyproject, a range the lock leaves, a moved exact pin, a lost hash."""
    entries, project = lock(), pyproject()

    def with_deps(deps):
        return {**project, "project": {**project["project"], "dependencies": deps}}

    deps = project["project"]["dependencies"]
    with pytest.raises(AssertionError, match="lacks"):
        check_lock(entries, with_deps([*deps, "polars>=1"]))
    with pytest.raises(AssertionError, match="outside pyproject"):
        check_lock(
            entries, with_deps([d if not d.startswith("pandas") else "pandas>=99" for d in deps])
        )
    with pytest.raises(AssertionError, match="outside pyproject"):
        check_lock(
            entries,
            with_deps([d if not d.startswith("torch==") else "torch==2.14.0" for d in deps]),
        )
    with pytest.raises(AssertionError, match="must pin torch"):
        check_lock(
            entries, with_deps([d if not d.startswith("torch==") else "torch>=2.14" for d in deps])
        )
    text = (REPO / "requirements.lock").read_text()
    block = re.search(r"^scipy==.*?(?=^\S)", text, flags=re.M | re.S).group(0)
    unhashed = text.replace(block, block.split(" \\")[0] + "\n")
    with pytest.raises(lockfile.LockError, match="scipy has no --hash"):
        lockfile.parse(unhashed)


def test_lock_names_no_local_index_and_is_universal():
    text = (REPO / "requirements.lock").read_text()
    assert not re.search(
        r"^\s*--(index-url|extra-index-url|find-links)|file://|/opt/", text, flags=re.M
    ), "requirements.lock names an index or a local path: `make lock` (uv) writes none"
    assert "make lock" in text.splitlines()[1], (
        "requirements.lock's header should say it comes from `make lock`"
    )
    # --universal: the CUDA libraries carry markers, so the same lock installs on a Mac or a laptop
    assert "sys_platform == 'linux'" in lock()["nvidia-cublas"].marker


def test_build_requirements_are_pyprojects():
    build_in = [
        Requirement(line.split("#")[0])
        for line in lockfile.BUILD_IN.read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert sorted(map(str, build_in)) == sorted(pyproject()["build-system"]["requires"]), (
        "tools/build-requirements.in should list pyproject.toml's [build-system] requires"
    )


def test_tests_run_with_the_locked_versions():
    """The venv the tests run in is `make setup`'s: each direct dependency at its locked version."""
    entries = lock()
    for req in lockfile.direct(pyproject(), build=False):
        name = canonicalize_name(req.name)
        assert metadata.version(name) == entries[name].version, (
            f"the tests run with {name} {metadata.version(name)} but requirements.lock pins "
            f"{entries[name].version}: run `make setup`"
        )


# ---- workflow/envs/fmnist.yaml -------------------------------------------------------------------


def test_conda_env_is_written_from_the_lock():
    assert ENV.read_text() == lockfile.env_yaml(lock(), pyproject()), (
        "workflow/envs/fmnist.yaml is not what the lock gives: run `make lock` (or "
        "`python tools/lockfile.py env`)"
    )


def test_conda_env_pins_every_package_with_hashes():
    env = yaml.safe_load(ENV.read_text())
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "workflow/envs/fmnist.yaml should hold exactly one `pip:` list"
    entries = lock()
    pinned = {}
    for line in pips[0]:
        head, *hashes = line.split(" --hash=sha256:")
        req = Requirement(head)
        (spec,) = req.specifier
        assert spec.operator == "==" and hashes, f"{line[:60]!r} is not pinned with hashes"
        name = canonicalize_name(req.name)
        assert (spec.version, sorted(hashes)) == (
            entries[name].version,
            sorted(entries[name].hashes),
        )
        pinned[name] = spec.version
    # everything below the direct dependencies too, not only the ten at the top
    for name in ("torch", "snakemake", "nvidia-cublas", "pulp", "referencing", "pillow"):
        assert name in pinned, f"workflow/envs/fmnist.yaml lacks {name}"
    assert "pytest" not in pinned and "mlflow-skinny" not in pinned  # extras are not the jobs'
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    floor = re.search(r">=\s*(\d+\.\d+)", pyproject()["project"]["requires-python"]).group(1)
    assert python.replace(" ", "") == f"python={floor}", (
        f"the conda env's {python!r} is not pyproject's floor {floor}"
    )


def test_every_conda_directive_names_an_existing_env_file():
    """A rule's `conda:` path is relative to its .smk file; a wrong one fails only under --sdm conda."""
    found = 0
    for smk in sorted((REPO / "workflow").rglob("*.smk")) + [REPO / "workflow" / "Snakefile"]:
        for m in re.finditer(r"^\s*conda:\s*\n\s*\"([^\"]+)\"", smk.read_text(), flags=re.M):
            found += 1
            path = (smk.parent / m.group(1)).resolve()
            assert path == ENV.resolve(), (
                f"{smk.relative_to(REPO)}: conda: {m.group(1)!r} is not workflow/envs/fmnist.yaml "
                "(from workflow/rules/ it is '../envs/fmnist.yaml')"
            )
    assert found >= 10, f"only {found} conda: directives found; the pattern above is stale"


# ---- the container, CI ---------------------------------------------------------------------------


def container_sections(text: str) -> dict[str, str]:
    parts = re.split(r"^%(\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def check_container(text: str) -> None:
    sections = container_sections(text)
    assert re.search(r"^\s*requirements\.lock\s+\S+", sections.get("files", ""), flags=re.M), (
        "containers/fmnist.def should copy requirements.lock into the image (%files)"
    )
    post = sections.get("post", "")
    installs = [
        line for line in re.split(r"(?<!\\)\n", post) if re.search(r"\bpip\b.*\binstall\b", line)
    ]
    assert installs, "containers/fmnist.def installs nothing with pip"
    for line in installs:
        assert "--require-hashes" in line and "requirements.lock" in line, (
            f"containers/fmnist.def: {line.strip()!r} does not install from the lock "
            "(pip install --require-hashes -r .../requirements.lock)"
        )
    assert re.search(r"apt-get install[^\n]*\bg\+\+", post) and re.search(
        r"apt-get install[^\n]*\bgcc\b", post
    ), "containers/fmnist.def: torch.compile needs a C/C++ compiler (apt-get install gcc g++)"
    assert re.search(
        r"^\s*export\s+.*\bPYTHONNOUSERSITE=1\b", sections.get("environment", ""), flags=re.M
    ), "containers/fmnist.def: set PYTHONNOUSERSITE=1 in %environment (no ~/.local packages)"


def test_container_installs_the_lock():
    check_container(CONTAINER.read_text())


def test_container_drift_is_noticed():
    text = CONTAINER.read_text()
    with pytest.raises(AssertionError, match="does not install from the lock"):
        check_container(text + "\n%post\n    pip install torch==2.14.1\n")
    with pytest.raises(AssertionError, match="PYTHONNOUSERSITE"):
        check_container(text.replace("PYTHONNOUSERSITE=1", "PYTHONNOUSERSITE=0"))
    with pytest.raises(AssertionError, match="compiler"):
        check_container(text.replace("g++", "make"))


def test_driver_requirement_is_documented():
    cluster = (REPO / "docs" / "cluster.md").read_text()
    assert re.search(r"CUDA 13", cluster) and re.search(r"\b580\b", cluster), (
        "docs/cluster.md should state the NVIDIA driver the CUDA 13 build of torch needs (>= 580)"
    )


def test_github_snakemake_is_the_locked_one():
    workflow = yaml.safe_load(GITHUB.read_text())
    steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])]
    actions = [
        s for s in steps if str(s.get("uses", "")).startswith("snakemake/snakemake-github-action")
    ]
    assert actions, (
        ".github/workflows/main.yml no longer uses the Snakemake action; update this test"
    )
    locked = lock()["snakemake"].version
    for step in actions:
        version = str(step.get("with", {}).get("snakemake-version", ""))
        assert version == locked, (
            f"{step.get('name', step['uses'])!r} runs Snakemake {version or '(latest)'}, the lock has "
            f'{locked}: set `snakemake-version: "{locked}"`'
        )


# ---- selections from the lock (wheelhouse, conda env) --------------------------------------------


def test_selection_follows_the_lock_and_leaves_out_what_the_node_has():
    entries, project = lock(), pyproject()
    roots = [r.name for r in lockfile.direct(project, ["cluster"])]
    linux = lockfile.target_env("3.12")
    full = {e.name for e in lockfile.select(entries, roots, linux)}
    assert {"torch", "nvidia-cublas", "triton", "snakemake", "pulp", "setuptools"} <= full
    assert "snakemake-executor-plugin-slurm-jobstep" in full  # through the cluster extra
    assert "pytest" not in full and "colorama" not in full  # another extra; Windows only
    node = {e.name for e in lockfile.select(entries, roots, linux, ["torch", "pulp"])}
    # torch's CUDA libraries go with it; what snakemake needs too stays
    assert not {"torch", "pulp", "nvidia-cublas", "triton", "sympy"} & node
    assert {"snakemake", "typing-extensions"} <= node  # typing-extensions: torch's and pydantic's
    mac = {
        e.name
        for e in lockfile.select(entries, roots, lockfile.target_env("3.12", "darwin", "arm64"))
    }
    assert "torch" in mac and "nvidia-cublas" not in mac
    with pytest.raises(lockfile.LockError, match="does not hold"):
        lockfile.select(entries, roots, linux, ["torchh"])


def test_platform_tags_expand_to_what_a_glibc_allows():
    tags = lockfile.expand_platforms(["manylinux_2_28_x86_64"])
    assert {
        "manylinux_2_28_x86_64",
        "manylinux_2_24_x86_64",
        "manylinux2014_x86_64",
        "manylinux1_x86_64",
    } <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags and not any("aarch64" in t for t in tags)
    assert lockfile.expand_platforms(["macosx_11_0_arm64"]) == ["macosx_11_0_arm64"]
