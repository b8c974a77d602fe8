from pathlib import Path

import yaml

from tasks.config import EvalConfig

ROOT = Path(__file__).resolve().parents[2]


def test_deployment_parameters_and_example_configs_are_valid_configs():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        assert (ROOT / module).is_file() and name
        EvalConfig.model_validate(deployment["parameters"]["config"])
    for path in (ROOT / "deployments" / "configs").glob("*.yaml"):
        EvalConfig.model_validate(yaml.safe_load(path.read_text()))
