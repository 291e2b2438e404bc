"""The conda environments (envs/*.yaml, for --sdm conda) pin the same versions as requirements.txt."""

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            assert version, f"requirements.txt: {requirement!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda path: path.stem)
def test_conda_env_pins_match_requirements(env_file):
    pins = requirement_pins()
    environment = yaml.safe_load(env_file.read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert pip_section
    for requirement in pip_section:
        name, _, version = requirement.partition("==")
        assert name.lower() in pins, f"{env_file.name}: {name} is not in requirements.txt"
        assert version == pins[name.lower()], \
            f"{env_file.name}: {name}=={version}, requirements.txt pins {pins[name.lower()]}"


def test_every_rule_family_has_an_environment():
    families = {"data", "train", "evaluate", "judge", "analysis", "r"}
    assert {path.stem for path in (REPO / "envs").glob("*.yaml")} == families


def test_r_environment_has_what_the_beta_rule_runs():
    """rule beta_regression: R with the packages that the workflow probes for, and the Python of its CSV and
    Parquet steps (pandas and pyarrow, pinned as above)."""
    environment = yaml.safe_load((REPO / "envs" / "r.yaml").read_text())
    packages = {re.split(r"[=<>]", item)[0] for item in environment["dependencies"] if isinstance(item, str)}
    assert {"r-base", "r-glmmtmb", "r-jsonlite", "python"} <= packages
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert {requirement.partition("==")[0] for requirement in pip_section} >= {"pandas", "pyarrow"}
