"""The team's deployments, checked without a server: deployments/prefect.yaml (and the GPU
variants in deployments/gpu/) against the flows' parameter models, Prefect's prefect.yaml
schema and the work pools' base job templates; ``bifocal serve`` builds the same deployments."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.config import DATA_SOURCES, MODEL_KINDS, EvalConfig, ReportFormat, TaskKind
from tasks.plan import check_config

ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
GPU_FILE = ROOT / "deployments" / "gpu" / "prefect-gpu.yaml"
NIGHTLY = "nightly-suite"
AD_HOC = "ad-hoc-evaluation"
# parameters a deployment leaves to the Custom run form on purpose
LEFT_TO_FORM = {"review-ingest": {"run_id"}}
# what the GPU templates add to Prefect's defaults (paths into the template)
TEMPLATE_ADDITIONS = {
    "docker": [("variables", "properties", "container_create_kwargs"),
               ("job_configuration", "container_create_kwargs")],
    "kubernetes": [("variables", "properties", "gpu_limit"),
                   ("variables", "properties", "node_selector"),
                   ("variables", "properties", "tolerations"),
                   ("job_configuration", "job_manifest", "spec", "template", "spec",
                    "nodeSelector"),
                   ("job_configuration", "job_manifest", "spec", "template", "spec",
                    "tolerations"),
                   ("job_configuration", "job_manifest", "spec", "template", "spec",
                    "containers", 0, "resources", "limits", "nvidia.com/gpu")],
}
# EvalConfig sections declared without Field(description=...) in tasks/config.py (their
# fields are described); the form shows them without help text. None left.
UNDESCRIBED: dict[str, set[str]] = {}


def spec(path: Path = PREFECT_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def entries(path: Path = PREFECT_FILE) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in spec(path)["deployments"]}


def all_entries() -> list[dict[str, Any]]:
    return [*entries().values(), *entries(GPU_FILE).values()]


def flow_of(entry: dict[str, Any]) -> Any:
    from flows.serve import load_flow

    return load_flow(entry["entrypoint"])


def openapi(flow: Any) -> dict[str, Any]:
    """What ``prefect deploy`` stores as the deployment's ``parameter_openapi_schema``."""
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow).model_dump_for_openapi()


# ---- prefect.yaml and the flows' parameters ----------------------------------------------


def test_prefect_files_follow_prefects_schema_and_use_one_process_pool():
    from prefect.cli.deploy._models import PrefectYamlModel

    for path in (PREFECT_FILE, GPU_FILE):
        model = PrefectYamlModel.model_validate(spec(path))
        assert model.deployments and all(d.entrypoint for d in model.deployments)
    assert set(entries()) == {NIGHTLY, AD_HOC, "compare-runs", "review-ingest"}
    assert {e["work_pool"]["name"] for e in entries().values()} == {"bifocal"}
    assert "$" not in json.dumps(spec()["pull"])  # no environment variable to set first
    header = PREFECT_FILE.read_text().split("\nname:")[0]
    assert "prefect deploy --all --prefect-file deployments/prefect.yaml" in header
    assert "bifocal serve" in header


@pytest.mark.parametrize("entry", all_entries(), ids=lambda e: e["name"])
def test_deployment_parameters_validate_against_their_flow(entry):
    """What Prefect checks at deploy (the stored schema) and at run time (the signature)."""
    from prefect.utilities.schema_tools import validate

    flow = flow_of(entry)
    parameters = entry.get("parameters") or {}
    validate(parameters, openapi(flow), raise_on_error=True, ignore_required=True)
    schema = openapi(flow)
    missing = set(schema.get("required", [])) - set(parameters)
    assert missing == LEFT_TO_FORM.get(entry["name"], set())
    filled = parameters | {name: "0" * 32 for name in missing}
    flow.validate_parameters(filled)  # pydantic models of the signature (EvalConfig, ...)


def test_configs_pass_the_project_checks():
    from tasks.suite import SuiteConfig, check_suite

    for entry in all_entries():
        config = (entry.get("parameters") or {}).get("config")
        if entry["entrypoint"].startswith("flows/suite.py"):
            check_suite(SuiteConfig.model_validate(config))
        elif config is not None:
            check_config(EvalConfig.model_validate(config))
    for path in (ROOT / "deployments" / "configs").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if path.stem.endswith("-suite"):
            check_suite(SuiteConfig.model_validate(data))
            continue
        check_config(EvalConfig.model_validate(data))


def test_nightly_suite_runs_the_suite_file_with_gate_and_promotion():
    from tasks.suite import SuiteConfig, expand_suite

    entry = entries()[NIGHTLY]
    suite_file = yaml.safe_load((ROOT / "deployments/configs/nightly-suite.yaml").read_text())
    assert entry["parameters"] == {"config": suite_file}
    assert entry["entrypoint"] == "flows/suite.py:suite"
    pairs = dict(expand_suite(SuiteConfig.model_validate(suite_file)))
    assert len(pairs) == 4  # 2 models x 2 datasets
    gated = {label: c for label, c in pairs.items() if c.gate is not None}
    assert list(gated) == ["clip-tiny-long@demo-test"]
    config = gated["clip-tiny-long@demo-test"]
    assert config.gate is not None and config.gate.baseline == "models:/bifocal-demo-clip@champion"
    assert config.promote is not None and config.promote.alias == "champion"
    assert all(c.promote is None for label, c in pairs.items() if label not in gated)


def test_suite_gate_must_name_entries_of_the_grid():
    from tasks.config_io import ConfigError
    from tasks.suite import SuiteConfig, expand_suite

    data = yaml.safe_load((ROOT / "deployments/configs/nightly-suite.yaml").read_text())
    data["gate"] |= {"model": "clip-huge", "dataset": "demo-val"}
    data["shared"]["promote"] = {"model_name": "other"}
    with pytest.raises(ConfigError) as raised:
        expand_suite(SuiteConfig.model_validate(data))
    for problem in ("gate.model: no models entry named 'clip-huge'",
                    "gate.dataset: no datasets entry named 'demo-val'", "shared.promote:"):
        assert problem in str(raised.value)
    del data["gate"], data["shared"]["promote"]
    with pytest.raises(ConfigError, match="promote: needs the suite's gate"):
        expand_suite(SuiteConfig.model_validate(data))


def test_nightly_schedule_and_concurrency():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    entry = entries()[NIGHTLY]
    [schedule] = entry["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == ("0 2 * * *", "UTC")
    Cron(schedule["cron"], timezone=schedule["timezone"])  # a valid cron string
    limit = entry["concurrency_limit"]
    assert limit["limit"] == 1
    assert ConcurrencyLimitStrategy(limit["collision_strategy"]) is \
        ConcurrencyLimitStrategy.CANCEL_NEW
    unscheduled = [e for name, e in entries().items() if name != NIGHTLY]
    assert all(not e.get("schedules") for e in unscheduled)


def test_ad_hoc_form_is_the_whole_eval_config():
    """The Custom run form: nested sections with descriptions, enums and defaults."""
    from flows.evaluate import evaluate

    entry = entries()[AD_HOC]
    assert entry["entrypoint"] == "flows/evaluate.py:evaluate" and not entry.get("schedules")
    schema = openapi(evaluate)
    assert schema["properties"]["config"]["$ref"] == "#/definitions/EvalConfig"
    definitions = schema["definitions"]
    sections = definitions["EvalConfig"]["properties"]
    assert set(sections) == set(EvalConfig.model_fields)
    assert sections["model"]["$ref"] == "#/definitions/ModelConfig"
    assert definitions["TaskKind"]["enum"] == [kind.value for kind in TaskKind]
    model = definitions["ModelConfig"]["properties"]
    assert model["dtype"]["enum"] == ["auto", "float32", "float16", "bfloat16"]
    assert (model["batch_size"]["default"], model["batch_size"]["minimum"]) == (64, 1)
    assert definitions["ReportFormat"]["enum"] == [f.value for f in ReportFormat]
    assert definitions["ReviewConfig"]["properties"]["size"]["default"] == 20
    for name, definition in definitions.items():
        for field, prop in definition.get("properties", {}).items():
            if field not in UNDESCRIBED.get(name, set()):
                assert prop.get("description"), f"{name}.{field} has no description"
    config = EvalConfig.model_validate(entry["parameters"]["config"])
    assert config.model.path == ".bifocal/demo/models/clip-tiny-long"
    assert all(sections[name].get("description") for name in sections)
    assert model["kind"]["enum"] == list(MODEL_KINDS) and model["kind"]["default"] == "dual_encoder"
    dataset = definitions["DatasetConfig"]["properties"]
    assert dataset["source"]["enum"] == list(DATA_SOURCES)  # = the registries: test_config
    assert dataset["columns"]["$ref"] == "#/definitions/ColumnMapping"
    assert model["device"]["pattern"] and "cuda:0" in model["device"]["examples"]
    report = definitions["ReportConfig"]["properties"]
    assert report["formats"]["default"] == [f.value for f in ReportFormat]  # not "0 selected"


def test_form_refuses_what_check_config_refuses():
    """The deployment's stored schema (what the UI form and the server check) rejects a model
    kind, data source or device that tasks.plan.check_config would refuse."""
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.evaluate import evaluate

    schema = openapi(evaluate)
    good = copy.deepcopy(entries()[AD_HOC]["parameters"])
    validate(good, schema, raise_on_error=True, preprocess=True)
    for section, field, value in [("model", "kind", "clip_thing"), ("dataset", "source", "ftp"),
                                  ("model", "device", "gpu")]:
        bad = copy.deepcopy(good)
        bad["config"][section][field] = value
        with pytest.raises(ValidationError):
            validate(bad, schema, raise_on_error=True, preprocess=True)


# ---- the pull step: the worker runs the flows where `prefect deploy` ran -----------------


@pytest.fixture
def steps_without_api(monkeypatch):
    """Prefect's own ``run_steps``, minus the block/variable look-ups (none are used here),
    which would start a temporary Prefect server."""
    import prefect.deployments.steps.core as core

    async def unchanged(template: Any, *args: Any, **kwargs: Any) -> Any:
        return template

    monkeypatch.setattr(core, "resolve_block_document_references", unchanged)
    monkeypatch.setattr(core, "resolve_variables", unchanged)
    return lambda steps: asyncio.run(core.run_steps(steps, {}, print_function=lambda *a: None))


def test_pull_step_enters_the_folder_deploy_ran_in_without_a_variable(tmp_path, monkeypatch,
                                                                      steps_without_api):
    """What ``prefect deploy`` (Prefect 3.8, prefect/cli/deploy/_core.py) stores: the build
    steps' outputs applied to the pull steps; the worker then runs them from anywhere."""
    from prefect.utilities.templating import apply_values

    monkeypatch.delenv("BIFOCAL_REPO", raising=False)
    monkeypatch.chdir(ROOT)
    outputs = steps_without_api(spec()["build"])
    pull = apply_values(spec()["pull"], outputs, remove_notset=False)
    assert pull == [{"prefect.deployments.steps.set_working_directory":
                     {"directory": str(ROOT.resolve())}}]
    monkeypatch.chdir(tmp_path)  # a worker starts elsewhere
    steps_without_api(pull)
    assert Path.cwd() == ROOT.resolve() and (Path.cwd() / "flows" / "evaluate.py").is_file()
    header = PREFECT_FILE.read_text().split("\nname:")[0]
    assert "BIFOCAL_REPO" not in header and "from the repository root" in header


# ---- bifocal serve: the same deployments ---------------------------------------------------


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_served_deployments_equal_prefect_yaml(in_repo):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import build_deployments

    served = {d.name: d for d in build_deployments()}
    assert list(served) == list(entries())
    for name, entry in entries().items():
        deployment = served[name]
        assert deployment.entrypoint == entry["entrypoint"]
        assert deployment.flow_name == flow_of(entry).name
        assert deployment.parameters == (entry.get("parameters") or {})
        assert deployment.description == entry["description"]
        assert deployment.tags == entry["tags"]
        assert deployment.enforce_parameter_schema
        assert deployment.work_pool_name is None  # served: runs in the serving process
        got = [(s.schedule.cron, s.schedule.timezone, s.slug, s.active)
               for s in deployment.schedules]
        want = [(s["cron"], s["timezone"], s.get("slug"), True)
                for s in entry.get("schedules") or []]
        assert got == want
        limit = entry.get("concurrency_limit")
        assert deployment.concurrency_limit == (limit["limit"] if limit else None)
        strategy = deployment.concurrency_options and \
            deployment.concurrency_options.collision_strategy
        assert strategy == (ConcurrencyLimitStrategy(limit["collision_strategy"])
                            if limit else None)


def test_serve_refuses_what_it_cannot_serve(in_repo, tmp_path):
    from flows.serve import ServeError, build_deployments, concurrency_of, schedule_of

    with pytest.raises(ServeError, match="no deployment named nope"):
        build_deployments(only=["nope"])
    bad = spec()
    bad["deployments"][0]["triggers"] = [{"enabled": True}]
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ServeError, match="triggers cannot be served"):
        build_deployments(tmp_path / "prefect.yaml")
    with pytest.raises(ServeError, match="not supported"):
        schedule_of({"cron": "0 2 * * *", "every": "night"})
    assert schedule_of({"interval": 600}).interval.total_seconds() == 600
    assert concurrency_of(2) == 2


def test_serve_command_lists_the_deployments(in_repo, capsys):
    from flows.serve_cli import add_serve_parser

    parser = argparse.ArgumentParser(prog="bifocal")
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--list", "--only", NIGHTLY, "--directory", str(ROOT)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "suite/nightly-suite  flows/suite.py:suite  0 2 * * * (UTC); at most 1 at a " \
        "time (CANCEL_NEW)" in out
    assert AD_HOC not in out


# ---- work pools: job variables against the pool type's base job template -------------------


def bundled_default_template(pool_type: str) -> dict[str, Any]:
    """The default base job template Prefect ships for a worker type (offline: the
    collections registry view bundled with the package; the local worker class for the
    types Prefect itself ships, as ``prefect work-pool create --type`` does)."""
    import prefect.server.api.collections as collections
    from prefect.workers.base import BaseWorker
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    if BaseWorker.get_worker_class_from_type(pool_type) is not None:
        template = asyncio.run(get_default_base_job_template_for_infrastructure_type(pool_type))
        assert template is not None
        return template
    view = Path(collections.__file__).parent / "collections_data/views" \
        / "aggregate-worker-metadata.json"
    for collection in json.loads(view.read_text()).values():
        for worker in collection.values():
            if worker["type"] == pool_type:
                return worker["default_base_job_configuration"]
    raise AssertionError(f"Prefect ships no {pool_type} worker metadata")


def pool_templates() -> dict[str, tuple[str, dict[str, Any]]]:
    """Work pool name -> (type, base job template) of every pool the deployments use."""
    pools = {"bifocal": ("process", bundled_default_template("process"))}
    for name, pool in spec(GPU_FILE)["definitions"]["work_pools"].items():
        pools[name] = (pool["type"], json.loads((ROOT / pool["base_job_template"]).read_text()))
    return pools


def check_job_variables(variables: dict[str, Any], template: dict[str, Any]) -> None:
    """Every variable is one of the template's, and validates as the Prefect server
    validates a deployment's job variables (and strictly, per variable, with jsonschema)."""
    import jsonschema
    from prefect.utilities.schema_tools import is_valid_schema, validate

    schema = template["variables"]
    is_valid_schema(schema, preprocess=False)
    unknown = set(variables) - set(schema["properties"])
    assert not unknown, f"not variables of the pool's template: {sorted(unknown)}"
    validate(variables, schema, raise_on_error=True, preprocess=True, ignore_required=True,
             allow_none_with_default=True)
    for name, value in variables.items():
        jsonschema.validate(value, schema["properties"][name] | {
            "definitions": schema.get("definitions", {})})


def render(template: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker gets: template defaults, then the job variables."""
    from prefect.utilities.templating import apply_values

    defaults = {name: prop["default"] for name, prop in template["variables"]["properties"].items()
                if prop.get("default") is not None}
    return apply_values(copy.deepcopy(template["job_configuration"]), defaults | variables)


def test_job_variables_are_variables_of_their_pools_templates():
    pools = pool_templates()
    for entry in all_entries():
        pool = entry["work_pool"]
        _, template = pools[pool["name"]]
        check_job_variables(pool.get("job_variables") or {}, template)


def without(template: dict[str, Any], paths: list[tuple[Any, ...]]) -> dict[str, Any]:
    template = copy.deepcopy(template)
    for path in paths:
        node = template
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return template


@pytest.mark.parametrize("pool_type", sorted(TEMPLATE_ADDITIONS))
def test_gpu_templates_are_prefects_defaults_plus_the_gpu_variables(pool_type):
    """Customised templates: exactly Prefect's default plus the GPU additions, which the
    default cannot take (its variables do not include them)."""
    pools = {kind: template for kind, template in pool_templates().values()}
    default = bundled_default_template(pool_type)
    additions = TEMPLATE_ADDITIONS[pool_type]
    assert without(pools[pool_type], additions) == default
    added = {path[-1] for path in additions if path[0] == "variables"}
    assert not added & set(default["variables"]["properties"])


def gpu_job(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    entry = entries(GPU_FILE)[name]
    _, template = pool_templates()[entry["work_pool"]["name"]]
    return template, entry["work_pool"]["job_variables"]


def test_docker_gpu_job_requests_a_gpu_device():
    docker = pytest.importorskip("docker")
    from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS

    template, variables = gpu_job("ad-hoc-evaluation-gpu-docker")
    job = render(template, variables)
    assert job["image"] == variables["image"] and job["env"]["HF_HUB_OFFLINE"] == "1"
    kwargs = job["container_create_kwargs"]
    assert set(kwargs) <= set(RUN_CREATE_KWARGS) | set(RUN_HOST_CONFIG_KWARGS)
    requests = [docker.types.DeviceRequest(**r) for r in kwargs["device_requests"]]
    assert [(r.driver, r.count, r.capabilities) for r in requests] == [("nvidia", 1, [["gpu"]])]


def test_kubernetes_gpu_job_requests_nvidia_gpus():
    template, variables = gpu_job("ad-hoc-evaluation-gpu-k8s")
    manifest = render(template, variables)["job_manifest"]
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1, "memory": "32Gi"}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert container["image"] == variables["image"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    bare = render(template, {"image": "x"})["job_manifest"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in bare["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in bare and "tolerations" not in bare


def test_bad_job_variables_are_refused():
    from prefect.utilities.schema_tools import ValidationError

    template, variables = gpu_job("ad-hoc-evaluation-gpu-k8s")
    with pytest.raises(ValidationError, match="gpu_limit"):
        check_job_variables(variables | {"gpu_limit": "one"}, template)
    with pytest.raises(AssertionError, match="gpu_count"):
        check_job_variables(variables | {"gpu_count": 1}, template)
