"""Property tests of the config loader: any mutation of a valid config validates or raises ConfigError naming a key path.

The loader is the whole start-up path of the workflow (common.smk): schema validation with defaults,
run expansion and the report section's checks. Hypothesis mutates the shipped default config and a
test config (replace a value at any key path by a value of any type, delete a key, add one) and
asserts that nothing deeper than the project's own ConfigError escapes.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import REPO, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmnist import compare, experiments
from fmnist import config as fconfig

BASES = [
    yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
    tiny_config(
        augmentations={"mixup": {"kind": "mixup", "alpha": 0.2}},
        settings={"short": {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1}}},
        studies={
            "tiny": {
                "models": ["standard_cnn"],
                "augmentations": ["none", "mixup"],
                "settings": ["short"],
                "seeds": [0],
            }
        },
    ),
]

# Values of every JSON/YAML type a user could write, nested a little.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["none", "mixup", "standard_cnn", "default", "adam", "cpu", "auto", "", "-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def key_paths(node, prefix=()):
    """Every key path of a nested config (dict keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from key_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from key_paths(v, (*prefix, i))


@st.composite
def mutated(draw):
    config = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in key_paths(config) if p]
        path = draw(st.sampled_from(paths))
        parent = config
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        else:
            parent.append(draw(values))
    return config


def load_like_the_workflow(config: dict) -> None:
    fconfig.validate(config)
    _runs, studies = experiments.expand(config)
    compare.check_report_config(config["report"], studies)


KEY_PATH = re.compile(r"(<top level>|[A-Za-z_][\w-]*([.\[][^:\s]*)?)\s*:")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_config_validates_or_names_a_key_path(config):
    try:
        load_like_the_workflow(config)
    except fconfig.ConfigError as exc:
        message = str(exc)
        assert KEY_PATH.search(message), f"no key path in: {message}"
        assert "Traceback" not in message


@pytest.mark.parametrize("index", range(len(BASES)))
def test_unmutated_configs_load(index):
    load_like_the_workflow(copy.deepcopy(BASES[index]))
