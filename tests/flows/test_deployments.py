from pathlib import Path

import yaml

from tasks.config import EvalConfig
from tasks.plan import check_config

ROOT = Path(__file__).resolve().parents[2]


def test_deployment_parameters_and_example_configs_are_valid_configs():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        assert (ROOT / module).is_file() and name
        if "config" in deployment["parameters"]:
            EvalConfig.model_validate(deployment["parameters"]["config"])
    for path in (ROOT / "deployments" / "configs").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if path.stem.endswith("-suite"):
            from tasks.suite import SuiteConfig, check_suite

            check_suite(SuiteConfig.model_validate(data))
            continue
        check_config(EvalConfig.model_validate(data))
