"""workflow/envs/fmnist.yaml (for `--sdm conda`) pins exactly what the tests run with, within pyproject.toml's ranges."""

import re
import tomllib
from importlib import metadata

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ENV = REPO / "workflow" / "envs" / "fmnist.yaml"


def env_pip_requirements(env: dict) -> list[str]:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "workflow/envs/fmnist.yaml should hold exactly one `pip:` list"
    return pips[0]


def pins(env: dict) -> dict[str, str]:
    """Normalized name -> exact version of each pip entry; an entry not pinned with == fails."""
    out = {}
    for line in env_pip_requirements(env):
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"workflow/envs/fmnist.yaml: {line!r} is not pinned to one version (write {req.name}==X.Y.Z)"
        )
        out[canonicalize_name(req.name)] = specs[0].version
    return out


def check(env: dict, project: dict, installed=metadata.version) -> None:
    pinned = pins(env)
    wanted = {canonicalize_name(Requirement(d).name): Requirement(d) for d in project["dependencies"]}
    missing = sorted(set(wanted) - set(pinned))
    assert not missing, f"workflow/envs/fmnist.yaml lacks {missing} (pyproject.toml [project.dependencies])"
    for name, req in wanted.items():
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"workflow/envs/fmnist.yaml pins {name}=={pinned[name]}, outside pyproject's {req}; edit both together"
        )
    for name, version in pinned.items():
        assert installed(name) == version, (
            f"workflow/envs/fmnist.yaml pins {name}=={version} but the tests run with {installed(name)}; "
            "pin what is tested"
        )
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    floor = re.search(r">=\s*(\d+\.\d+)", project["requires-python"]).group(1)
    version = re.search(r"(\d+\.\d+)", python).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split("."))), (
        f"workflow/envs/fmnist.yaml pins {python}, below pyproject's requires-python {project['requires-python']}"
    )


def test_conda_env_pins_what_is_tested_within_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    check(yaml.safe_load(ENV.read_text()), project)


def test_drift_is_noticed():
    """A range instead of a pin, a pin outside pyproject's range, an untested pin, a missing package."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load(ENV.read_text())
    pip = env_pip_requirements(env)

    def variant(old, new):
        changed = [new if p.startswith(old) else p for p in pip]
        return {"dependencies": [d for d in env["dependencies"] if not isinstance(d, dict)] + [{"pip": changed}]}

    with pytest.raises(AssertionError, match="not pinned to one version"):
        check(variant("pandas==", "pandas>=2.2"), project)
    with pytest.raises(AssertionError, match="outside pyproject"):
        check(variant("pandas==", "pandas==2.1.0"), project)
    with pytest.raises(AssertionError, match="but the tests run with"):
        check(variant("scipy==", "scipy==1.11.0"), project)
    with pytest.raises(AssertionError, match="lacks"):
        check(variant("jinja2==", "jinja2-extras==1.0"), project)


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
