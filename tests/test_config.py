from pathlib import Path

import pytest

from tasks.config import EvalConfig
from tasks.config_io import ConfigError, build_config, flatten, load_config
from tasks.plan import check_config

BASE = {"model": {"path": "models/clip"}, "dataset": {"path": "data/test.jsonl"}}


def test_defaults_fill_everything_but_model_and_dataset_paths():
    config = build_config(BASE)
    assert config.task.value == "retrieval"
    assert config.model.kind == "dual_encoder" and config.model.device == "auto"
    assert config.dataset.source == "manifest"
    assert config.tracking.tracking_uri is None


def test_yaml_with_overrides_parses_values_as_yaml(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: m}\ndataset: {path: d.jsonl}\n")
    config = load_config(path, ["model.batch_size=8", "review.size=0", "model.device=cpu",
                                "model.amp=true", "metric_options.retrieval.ks=[1, 2]"])
    # YAML true is the boolean, which model.amp still takes (true on CPU: bf16)
    assert config.model.batch_size == 8 and config.review.size == 0 and config.model.amp == "bf16"
    assert config.metric_options == {"retrieval": {"ks": [1, 2]}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.batch_size=0", "model.batch_size: Input should be greater than or equal to 1"),
        ("model.device=gpu", "model.device: must be auto, cpu, mps, cuda or cuda:N"),
        ("model.kind=nope", "model.kind: unknown model kind 'nope'"),
        ("dataset.source=ftp", "dataset.source: unknown data source 'ftp'"),
        ("model.dtype=int4", "model.dtype: Input should be 'auto', 'float32'"),
        ("metrics=[no_such_metric]", "unknown metric 'no_such_metric'"),
        ("model.typo=1", "model.typo: Extra inputs are not permitted"),
        ("review.strategies=[{name: worstest}]",
         "review.strategies[0].name: unknown sampling strategy 'worstest'; known: "),
        ("review.strategies=[{name: random}, {name: stratified}]",
         "review.strategies[1]: stratified needs a column to stratify by"),
        ("review.strategies=[{name: disagreement, metrics: [cider]}]",
         "review.strategies[0]: disagreement needs exactly two metrics"),
        ("review.strategies=[{name: filter_top_k}]",
         "review.strategies[0]: filter_top_k needs thresholds"),
        ("review.strategies=[{name: worst, share: 0.7}, {name: random, share: 0.6}]",
         "strategy shares add up to 1.3, more than 1"),
        ("review.schema=[{name: r, type: rating, min: 5, max: 1}]",
         "rating 'r': min must be below max"),
        ("review.schema=[{name: v, type: choice, choices: [good, good]}]",
         "choice 'v' needs at least two distinct choices"),
        ("review.schema=[{name: v, type: choice, choices: [yes, no]}]",
         "quote the choices, e.g. ['yes', 'no']"),
        ("review.schema=[{name: prediction, type: text}]",
         "'prediction' is a column of the review queue; choose another name"),
        ("review.schema=[{name: a, type: text}, {name: a, type: text}]",
         "rating field names repeat"),
    ],
)
def test_invalid_values_name_the_field_and_problem(override, expected):
    with pytest.raises(ConfigError) as error:
        check_config(build_config(BASE, [override]))
    assert expected in str(error.value)


def test_registry_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        check_config(build_config(BASE, ["model.kind=nope", "dataset.source=ftp"]))
    assert "model.kind: unknown model kind 'nope'" in str(error.value)
    assert "dataset.source: unknown data source 'ftp'" in str(error.value)


def test_schema_imports_no_registry():
    """Validating a config imports neither the adapters, kinds nor pandas."""
    import subprocess
    import sys

    code = ("import sys; from tasks.config import EvalConfig; "
            "EvalConfig.model_validate({'model': {'path': 'm'}, 'dataset': {'path': 'd'}}); "
            "loaded = [m for m in ('tasks.models', 'tasks.kinds', 'tasks.data', 'tasks.metrics', "
            "'pandas', 'torch') if m in sys.modules]; print(loaded)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"


def test_missing_required_field_is_named():
    with pytest.raises(ConfigError, match="model.path: Field required"):
        build_config({"model": {}, "dataset": {"path": "x"}})


def test_bad_override_syntax_and_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        build_config(BASE, ["no_equals_sign"])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_flatten_gives_dotted_string_params():
    flat = flatten(build_config(BASE, ["metrics=[retrieval]"]))
    assert flat["model.path"] == "models/clip"
    assert flat["model.batch_size"] == "64"
    assert flat["metrics"] == "[retrieval]"
    assert all(isinstance(v, str) for v in flat.values())


def test_json_schema_has_descriptions_for_the_ui_form():
    schema = EvalConfig.model_json_schema()
    model = schema["$defs"]["ModelConfig"]["properties"]
    assert model["dtype"]["enum"] == ["auto", "float32", "float16", "bfloat16"]
    assert all("description" in field for field in model.values())


def test_model_kind_must_fit_the_task():
    with pytest.raises(ConfigError, match="task 'captioning' needs model.kind in"):
        check_config(build_config(BASE, ["task=captioning"]))
    kind = check_config(build_config(BASE, ["task=captioning", "model.kind=captioner"]))
    assert kind.name == "captioning"
    with pytest.raises(ConfigError, match="metric 'retrieval' is for task 'retrieval', not "
                                          "'classification'"):
        check_config(build_config(BASE, ["task=zero_shot_classification", "metrics=[retrieval]"]))


def test_zero_shot_templates_need_a_placeholder():
    with pytest.raises(ConfigError, match="zero_shot.templates"):
        build_config(BASE, ["task=zero_shot_classification", "zero_shot.templates=[a photo]"])


# ---- the UI form: choices from the registries, defaults and descriptions in the schema ----


def test_form_choices_equal_the_registries():
    """config.py lists the registries' names without importing them: keep the lists equal
    (read in a fresh interpreter: other tests register throwaway adapters in this one)."""
    from tasks.config import DATA_SOURCES, MODEL_KINDS

    adapters, sources = registry_names()
    assert list(MODEL_KINDS) == adapters, "add the adapter to tasks.config.MODEL_KINDS"
    assert list(DATA_SOURCES) == sources, "add the source to tasks.config.DATA_SOURCES"


def registry_names() -> tuple[list[str], list[str]]:
    """The adapters' and data sources' registered names, as a fresh process finds them."""
    import json
    import subprocess
    import sys

    code = ("import json; from tasks.models.base import ADAPTERS; "
            "from tasks.data.base import SOURCES; "
            "print(json.dumps([ADAPTERS.names(), SOURCES.names()]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    adapters, sources = json.loads(done.stdout.strip().splitlines()[-1])
    return adapters, sources


def test_schema_offers_choices_a_device_pattern_and_shows_list_defaults():
    import re

    from tasks.config import DATA_SOURCES, DEVICE_EXAMPLES, MODEL_KINDS

    definitions = EvalConfig.model_json_schema()["$defs"]
    model = definitions["ModelConfig"]["properties"]
    assert model["kind"]["enum"] == list(MODEL_KINDS) and model["kind"]["default"] in MODEL_KINDS
    source = definitions["DatasetConfig"]["properties"]["source"]
    assert source["enum"] == list(DATA_SOURCES) and source["default"] == "manifest"
    pattern = model["device"]["pattern"]
    assert all(re.fullmatch(pattern, d) for d in (*DEVICE_EXAMPLES, "cuda:12"))
    assert not any(re.fullmatch(pattern, d) for d in ("gpu", "cuda:", "cuda:x", "CPU"))
    for device in DEVICE_EXAMPLES:  # the validator accepts what the pattern accepts
        assert build_config(BASE, [f"model.device={device}"]).model.device == device
    formats = definitions["ReportConfig"]["properties"]["formats"]
    assert formats["default"] == ["json", "html", "parquet", "csv"]
    review = definitions["ReviewConfig"]["properties"]
    assert review["formats"]["default"] == ["csv", "jsonl", "label_studio", "sheet"]
    assert [s["name"] for s in review["strategies"]["default"]] == ["worst", "random"]
    templates = definitions["ZeroShotConfig"]["properties"]["templates"]
    assert templates["default"] == ["a photo of a {}."]


def test_every_section_and_field_is_described():
    schema = EvalConfig.model_json_schema()
    for name, definition in [("EvalConfig", schema), *schema["$defs"].items()]:
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_flatten_keeps_every_field_run_params_the_applying_ones():
    from tasks.config_io import run_params

    flat = flatten(build_config(BASE))
    params = run_params(build_config(BASE))
    assert "zero_shot.templates" in flat and "zero_shot.templates" not in params
    assert {k: v for k, v in flat.items() if k in params} == params
