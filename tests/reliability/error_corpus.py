"""A corpus of broken inputs for ``bifocal run``: each must end in one clear error line.

Every case is a file-level mistake a user makes (a config that is not YAML, a manifest with the
wrong delimiter, a truncated parquet file, an unknown metric option, a pickled checkpoint, ...),
written into its own folder and run as ``python -m flows.cli run CONFIG [ARGS]`` in a
subprocess. A case is **clear** when

- the exit status is 2,
- stderr holds no ``Traceback``,
- exactly one stderr line starts with ``bifocal:``; it starts with ``bifocal: error:`` and holds
  the case's phrase,
- every other stderr line is log output: a timestamped log record of Prefect or MLflow, or a
  continuation of an INFO/WARNING record (Prefect's temporary-server notice, a progress bar).
  An ERROR record may not continue over more lines (that is a traceback or a dumped message).

Most cases fail before the flow starts (config, plan and pre-flight checks: about 1.5 s each);
the few marked ``flow`` reach Prefect (a temporary server, ~7-15 s each) and are run one after
the other at the end. ``run_error_corpus(tmp)`` builds what the cases need under ``tmp`` (a
tiny dataset, a tiny CLIP, pickled checkpoints) and returns the summary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MARKER = "MARKER"  # what a pickled payload would write into its case folder when unpickled

# A file's content: text, bytes, or a builder called with (target path, fixtures).
Content = str | bytes | Callable[[Path, "Fixtures"], None]


@dataclass(frozen=True)
class Case:
    cls: str  # what kind of input is broken (the group in the summary)
    name: str
    phrase: str  # must appear in the error line
    config: Mapping[str, Any] | str | None = None  # merged onto BASE; str: the config file text
    files: Mapping[str, Content] = field(default_factory=dict)  # written into the case folder
    args: tuple[str, ...] = ()  # after ``run CONFIG``
    config_name: str = "config.yaml"
    flow: bool = False  # reaches the Prefect flow (the slow path)


@dataclass(frozen=True)
class Fixtures:
    tmp: Path
    dataset: Path  # folder with images/ and data.jsonl (8 items)
    clip: Path  # a tiny CLIP checkpoint folder


BASE: dict[str, Any] = {
    "task": "retrieval",
    "model": {"kind": "dual_encoder", "path": "{clip}", "batch_size": 8, "device": "cpu"},
    "dataset": {"source": "manifest", "path": "{ds}/data.jsonl"},
    "review": {"size": 2},
    "report": {"destination": "{tmp}/reports"},
    "tracking": {"experiment": "error-corpus", "tracking_uri": "sqlite:///{tmp}/mlflow.db"},
    "work_dir": "{tmp}/work",
}


def manifest(name: str, **dataset: Any) -> dict[str, Any]:
    """A config reading the case folder's manifest ``name`` (images under the dataset)."""
    return {"dataset": {"path": "{case}/" + name, "root": "{ds}", **dataset}}


# ---- file builders ------------------------------------------------------------------------

ROWS = [{"id": f"item-{i}", "image": f"images/{i:03d}.png",
         "captions": [f"a picture {i}"]} for i in range(3)]
CSV_TEXT = "id,image,captions\n" + "".join(
    f"{r['id']},{r['image']},{r['captions'][0]}\n" for r in ROWS)
XLSX_BYTES = b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml" + bytes(64)
XLS_BYTES = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)


def _parquet(rows: list[dict[str, Any]] | None = None, columns: list[str] | None = None,
             cut: float | None = None) -> Callable[[Path, Fixtures], None]:
    def build(path: Path, fixtures: Fixtures) -> None:
        import pandas as pd

        frame = pd.DataFrame(rows if rows is not None else ROWS, columns=columns)
        frame.to_parquet(path)
        if cut is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * cut)])

    return build


def _karpathy(data: Any) -> str:
    return json.dumps(data)


class _WritesMarker:
    """Unpickling this runs ``exec`` and writes the case folder's MARKER file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.folder / MARKER)!r}, 'w').write('unpickled')",)


def _marker_pickle(path: Path, fixtures: Fixtures) -> None:
    """torch.save of a dict holding a tensor and an object whose unpickling writes MARKER."""
    import torch

    torch.save({"weight": torch.zeros(2), "payload": _WritesMarker(path.parent)}, path)


def _whole_module(path: Path, fixtures: Fixtures) -> None:
    """torch.save(model): a whole tiny torch_module class, pickled (not a state dict)."""
    import torch

    from tests.models.fusion_example import ImageClassifier

    torch.save(ImageClassifier(num_classes=2), path)


def _clip_files(weights: Content | None) -> dict[str, Content]:
    """The tiny CLIP's config/processor files, with ``weights`` as pytorch_model.bin / model
    .safetensors (bytes: a corrupt safetensors file)."""

    def copy(name: str) -> Callable[[Path, Fixtures], None]:
        return lambda path, fixtures: path.write_bytes((fixtures.clip / name).read_bytes())

    files: dict[str, Content] = {name: copy(name) for name in (
        "config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json")}
    if isinstance(weights, bytes):
        files["model.safetensors"] = weights
    elif weights is not None:
        files["pytorch_model.bin"] = weights
    return files


# ---- the cases ----------------------------------------------------------------------------

CASES: list[Case] = [
    # the config file itself
    Case("config_file", "missing", "cannot read config", config_name="absent/config.yaml",
         config=None),
    Case("config_file", "not_yaml", "is not valid YAML",
         config="task: retrieval\nmodel: {kind: dual_encoder, path: [\n"),
    Case("config_file", "yaml_list", "must be a mapping", config="- task: retrieval\n"),
    Case("config_file", "json_array", "must be a mapping", config_name="config.json",
         config=json.dumps([{"task": "retrieval"}])),
    Case("config_file", "spreadsheet", "not UTF-8", config_name="config.xlsx",
         files={"config.xlsx": XLSX_BYTES + b"\xff\xfe"}),
    Case("config_file", "directory", "cannot read config", config_name="dir",
         files={"dir/keep.txt": ""}),
    Case("config_file", "empty", "model: Field required", config=""),
    # the config's schema
    Case("config_schema", "batch_size_zero", "model.batch_size",
         config={"model": {"batch_size": 0}}),
    Case("config_schema", "unknown_key", "Extra inputs are not permitted",
         config={"modle": {"kind": "dual_encoder"}}),
    Case("config_schema", "unknown_task", "task: Input should be",
         config={"task": "segmentation"}),
    Case("config_schema", "review_size_text", "review.size", config={"review": {"size": "many"}}),
    Case("config_schema", "dataset_missing", "dataset: Field required",
         config="model: {kind: dual_encoder, path: m}\n"),
    # --set overrides
    Case("override", "no_equals", "must look like key.sub=value", args=("--set", "model")),
    Case("override", "not_a_section", "is not a section", args=("--set", "task.name=x")),
    Case("override", "value_not_yaml", "not valid YAML", args=("--set", "model.batch_size=[")),
    Case("override", "bad_value", "model.device", args=("--set", "model.device=[1, 2]")),
    # names that live in registries, rules across fields
    Case("plan", "unknown_model_kind", "unknown model kind",
         config={"model": {"kind": "clip_thing"}}),
    Case("plan", "unknown_source", "unknown data source", config={"dataset": {"source": "ftp"}}),
    Case("plan", "unknown_metric", "unknown metric 'recall'", config={"metrics": ["recall"]}),
    Case("plan", "metric_of_other_task", "is for task", config={"metrics": ["bleu"]}),
    Case("plan", "model_kind_for_task", "needs model.kind",
         config={"model": {"kind": "captioner"}}),
    # metric options, checked against each metric's signature
    Case("metric_options", "unknown_metric", "metric_options.recall: unknown metric",
         config={"metric_options": {"recall": {"ks": [1]}}}),
    Case("metric_options", "unknown_option", "metric_options.retrieval.k: unknown option",
         config={"metric_options": {"retrieval": {"k": [1, 5]}}}),
    Case("metric_options", "ks_word", "metric_options.retrieval.ks: Input should be",
         config={"metric_options": {"retrieval": {"ks": "five"}}}),
    Case("metric_options", "ks_item_text", "metric_options.retrieval.ks[1]",
         config={"metric_options": {"retrieval": {"ks": [1, "5"]}}}),
    Case("metric_options", "ks_zero", "greater than 0",
         config={"metric_options": {"retrieval": {"ks": [0, 5]}}}),
    Case("metric_options", "sigma_text", "metric_options.cider.sigma",
         config={"metric_options": {"cider": {"sigma": "wide"}}}),
    Case("metric_options", "no_options", "it takes: no options",
         config={"metric_options": {"bleu": {"smooth": True}}}),
    Case("metric_options", "set_override", "metric_options.retrieval.ks",
         args=("--set", "metric_options.retrieval.ks=five")),
    # JSON-lines manifests
    Case("manifest_jsonl", "empty", "is empty", config=manifest("m.jsonl"), files={"m.jsonl": ""}),
    Case("manifest_jsonl", "blank_lines", "no JSON object lines", config=manifest("m.jsonl"),
         files={"m.jsonl": "\n\n  \n"}),
    Case("manifest_jsonl", "json_array", "JSON array", config=manifest("m.jsonl"),
         files={"m.jsonl": json.dumps(ROWS)}),
    Case("manifest_jsonl", "indented_array", "JSON array", config=manifest("m.json"),
         files={"m.json": json.dumps(ROWS, indent=2)}),
    Case("manifest_jsonl", "no_captions", "'captions'", config=manifest("m.jsonl"),
         files={"m.jsonl": "".join(json.dumps({"id": r["id"], "image": r["image"]}) + "\n"
                                   for r in ROWS)}),
    Case("manifest_jsonl", "spreadsheet", "spreadsheet", config=manifest("m.jsonl"),
         files={"m.jsonl": XLSX_BYTES}),
    # CSV / TSV manifests
    Case("manifest_csv", "empty", "is empty", config=manifest("m.csv"), files={"m.csv": ""}),
    Case("manifest_csv", "header_only", "no data rows", config=manifest("m.csv"),
         files={"m.csv": "id,image,captions\n"}),
    Case("manifest_csv", "semicolons", "separated by", config=manifest("m.csv"),
         files={"m.csv": CSV_TEXT.replace(",", ";")}),
    Case("manifest_csv", "tabs_in_csv", "separated by", config=manifest("m.csv"),
         files={"m.csv": CSV_TEXT.replace(",", "\t")}),
    Case("manifest_csv", "unclosed_quote", "never closed", config=manifest("m.csv"),
         files={"m.csv": CSV_TEXT + 'item-9,images/009.png,"a caption that never ends\n'}),
    Case("manifest_csv", "other_columns", "'image'", config=manifest("m.csv"),
         files={"m.csv": CSV_TEXT.replace("id,image,captions", "key,file,text")}),
    Case("manifest_csv", "xlsx_as_csv", "spreadsheet", config=manifest("m.csv"),
         files={"m.csv": XLSX_BYTES}),
    Case("manifest_csv", "xls_as_csv", "spreadsheet", config=manifest("m.csv"),
         files={"m.csv": XLS_BYTES}),
    # parquet manifests
    Case("manifest_parquet", "truncated", "not a readable parquet file",
         config=manifest("m.parquet"), files={"m.parquet": _parquet(cut=0.6)}),
    Case("manifest_parquet", "csv_named_parquet", "parquet", config=manifest("m.parquet"),
         files={"m.parquet": CSV_TEXT}),
    Case("manifest_parquet", "no_rows", "has no rows", config=manifest("m.parquet"),
         files={"m.parquet": _parquet(rows=[], columns=["id", "image", "captions"])}),
    Case("manifest_parquet", "no_image_column", "'image'", config=manifest("m.parquet"),
         files={"m.parquet": _parquet(rows=[{"id": "a", "captions": ["x"]}])}),
    # the manifest file as a whole
    Case("manifest_file", "missing", "not found", config=manifest("absent.jsonl")),
    Case("manifest_file", "directory", "is a directory", config=manifest("m.jsonl"),
         files={"m.jsonl/keep.txt": ""}),
    Case("manifest_file", "xlsx_suffix", "unsupported manifest type", config=manifest("m.xlsx"),
         files={"m.xlsx": XLSX_BYTES}),
    Case("manifest_file", "txt_suffix", "unsupported manifest type", config=manifest("m.txt"),
         files={"m.txt": CSV_TEXT}),
    Case("manifest_file", "split_without_rows", "split 'test'",
         config=manifest("m.csv", split="test"),
         files={"m.csv": "id,image,captions,split\n" + "".join(
             f"{r['id']},{r['image']},{r['captions'][0]},train\n" for r in ROWS)}),
    # Karpathy split files
    Case("karpathy", "missing", "not found",
         config={"dataset": {"source": "karpathy", "path": "{case}/dataset_coco.json"}}),
    Case("karpathy", "not_json", "Karpathy split file",
         config={"dataset": {"source": "karpathy", "path": "{case}/dataset_coco.json"}},
         files={"dataset_coco.json": "images: [\n"}),
    Case("karpathy", "no_images_key", "not a Karpathy split file",
         config={"dataset": {"source": "karpathy", "path": "{case}/dataset_coco.json"}},
         files={"dataset_coco.json": _karpathy({"dataset": "coco"})}),
    # the model's files, checked before the flow
    Case("model_files", "missing_folder", "neither a local folder",
         config={"model": {"path": "{case}/no-such-model"}}),
    Case("model_files", "torch_module_settings_missing", "needs model.torch_module",
         config={"task": "matching", "model": {"kind": "torch_module",
                                               "path": "{case}/w.safetensors"}},
         files={"w.safetensors": b""}),
    Case("model_files", "torch_module_weights_missing", "does not exist",
         config={"task": "matching", "model": {
             "kind": "torch_module", "path": "{case}/w.safetensors",
             "torch_module": {"module": "tests.models.fusion_example:ImageClassifier"}}}),
    Case("model_files", "torch_module_weights_suffix", "must be .safetensors",
         config={"task": "matching", "model": {
             "kind": "torch_module", "path": "{case}/w.onnx",
             "torch_module": {"module": "tests.models.fusion_example:ImageClassifier"}}},
         files={"w.onnx": b"onnx"}),
    # checkpoints the adapters refuse while loading (in the flow)
    Case("checkpoint", "dual_encoder_pickled_payload", "refused to load", flow=True,
         config={"model": {"path": "{case}/model"}},
         files={f"model/{name}": content
                for name, content in _clip_files(_marker_pickle).items()}),
    Case("checkpoint", "torch_module_whole_module", "refused to load", flow=True,
         config={"task": "matching", "model": {
             "kind": "torch_module", "path": "{case}/model.pt",
             "torch_module": {"module": "tests.models.fusion_example:ImageClassifier",
                              "init_kwargs": {"num_classes": 2}, "image_size": 32}}},
         files={"model.pt": _whole_module}),
    Case("checkpoint", "dual_encoder_corrupt_safetensors", "cannot load dual encoder",
         flow=True, config={"model": {"path": "{case}/model"}},
         files={f"model/{name}": content
                for name, content in _clip_files(b"\x08\x00\x00\x00garbage!").items()}),
    # data whose every row is unusable (found by the data stage, in the flow)
    Case("data_rows", "all_images_missing", "no usable items", flow=True,
         config=manifest("m.jsonl", root="{case}"),
         files={"m.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS)}),
]


# ---- running and judging ------------------------------------------------------------------

LOG_RECORD = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3} \| (?P<prefect>\w+)\s*\||"
                        r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?P<mlflow>[A-Z]+) )")


def judge(stderr: str, returncode: int | None, phrase: str) -> str | None:
    """None when the error report is clear (see the module docstring), else why not."""
    if "Traceback" in stderr:
        return "traceback on stderr"
    if returncode != 2:
        return f"exit status {returncode}, not 2"
    error_lines, level = [], None
    for line in stderr.splitlines():
        if not line.strip():
            continue
        if line.startswith("bifocal:"):
            error_lines.append(line)
            level = None
            continue
        record = LOG_RECORD.match(line)
        if record:
            level = record.group("prefect") or record.group("mlflow")
        elif level not in ("DEBUG", "INFO", "WARNING"):
            return f"stray stderr line: {line[:200]!r}"
    if len(error_lines) != 1:
        return f"{len(error_lines)} 'bifocal:' lines on stderr"
    if not error_lines[0].startswith("bifocal: error:"):
        return f"error line does not start 'bifocal: error:': {error_lines[0][:200]!r}"
    if phrase not in error_lines[0]:
        return f"phrase {phrase!r} not in {error_lines[0][:300]!r}"
    return None


def _fill(value: Any, paths: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for key, path in paths.items():
            value = value.replace("{" + key + "}", path)
        return value
    if isinstance(value, Mapping):
        return {k: _fill(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, paths) for v in value]
    return value


def _merged(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = (_merged(out[key], value) if isinstance(value, Mapping)
                    and isinstance(out.get(key), Mapping) else value)
    return out


def prepare(case: Case, fixtures: Fixtures) -> tuple[Path, list[str]]:
    """Write the case's files and config; return (case folder, argv after ``bifocal``)."""
    folder = fixtures.tmp / "cases" / f"{case.cls}-{case.name}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"tmp": str(fixtures.tmp), "ds": str(fixtures.dataset), "clip": str(fixtures.clip),
             "case": str(folder)}
    for name, content in case.files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(_fill(content, paths))
        else:
            content(target, fixtures)
    config_path = folder / case.config_name
    if isinstance(case.config, str):
        config_path.write_text(case.config)
    elif case.config is not None or (not case.files and case.config_name == "config.yaml"):
        data = _fill(_merged(BASE, case.config or {}), paths)
        config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder, ["run", str(config_path), *(_fill(a, paths) for a in case.args)]


def build_fixtures(tmp: Path, model: bool = True) -> Fixtures:
    """A tiny dataset and a tiny CLIP checkpoint (the tests' builders), under ``tmp``; without
    ``model`` (no case loads it) the checkpoint folder stays empty."""
    from tests.helpers import build_tiny_clip, write_dataset

    dataset = tmp / "dataset"
    write_dataset(dataset)
    clip = tmp / "clip"
    clip.mkdir(parents=True, exist_ok=True)
    if model and not (clip / "config.json").is_file():
        build_tiny_clip(clip)
    return Fixtures(tmp=tmp, dataset=dataset, clip=clip)


@dataclass
class Outcome:
    case: Case
    returncode: int | None
    stderr: str
    seconds: float
    problem: str | None  # None: clear
    reached_flow: bool
    marker_written: bool


def run_case(case: Case, fixtures: Fixtures, env: Mapping[str, str],
             timeout: float | None = None) -> Outcome:
    folder, argv = prepare(case, fixtures)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "flows.cli", *argv], cwd=REPO, env=dict(env),
                              capture_output=True, text=True,
                              timeout=timeout or (240 if case.flow else 90))
        returncode, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) \
            else (expired.stderr or "")
    seconds = time.perf_counter() - started
    problem = judge(stderr, returncode, case.phrase) if returncode is not None else "timed out"
    return Outcome(case, returncode, stderr, round(seconds, 2), problem,
                   "Beginning flow run" in stderr, (folder / MARKER).exists()
                   or any(folder.rglob(MARKER)))


def corpus_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PREFECT_HOME": str(tmp / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                            env.get("PYTHONPATH")]))})
    return env


def run_error_corpus(tmp: Path, cases: list[Case] | None = None, workers: int = 2,
                     include_flow: bool = True) -> dict[str, Any]:
    """Run every case (``CASES`` by default) under ``tmp`` and summarise: ``cases``,
    ``classes``, ``clear_errors``, ``tracebacks``, ``wrong_exit`` (status not 2), ``in_flow``
    (cases that reached the Prefect flow), ``markers_written`` (pickled payloads that ran:
    must be 0), ``by_class`` ({class: [clear, total]}), ``failures`` (the unclear cases with
    why and their stderr's end) and ``seconds``. Quick cases run ``workers`` at a time, the
    flow cases one after the other (they share a Prefect home)."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    selected = [c for c in (cases if cases is not None else CASES)
                if include_flow or not c.flow]
    fixtures = build_fixtures(tmp, model=any(c.flow for c in selected))
    env = corpus_env(tmp)
    quick = [c for c in selected if not c.flow]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        outcomes = list(pool.map(lambda c: run_case(c, fixtures, env), quick))
    outcomes += [run_case(c, fixtures, env) for c in selected if c.flow]
    by_class: dict[str, list[int]] = {}
    for outcome in outcomes:
        counts = by_class.setdefault(outcome.case.cls, [0, 0])
        counts[0] += outcome.problem is None
        counts[1] += 1
    return {
        "cases": len(outcomes),
        "classes": len(by_class),
        "clear_errors": sum(o.problem is None for o in outcomes),
        "tracebacks": sum("Traceback" in o.stderr for o in outcomes),
        "wrong_exit": sum(o.returncode != 2 for o in outcomes),
        "in_flow": sum(o.reached_flow for o in outcomes),
        "markers_written": sum(o.marker_written for o in outcomes),
        "by_class": by_class,
        "failures": [{"case": f"{o.case.cls}/{o.case.name}", "problem": o.problem,
                      "exit": o.returncode, "stderr_tail": o.stderr[-1500:]}
                     for o in outcomes if o.problem is not None],
        "slowest": sorted(((o.seconds, f"{o.case.cls}/{o.case.name}") for o in outcomes),
                          reverse=True)[:5],
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":  # python -m tests.reliability.error_corpus [TMP]
    import tempfile

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="corpus-"))
    print(json.dumps(run_error_corpus(root), indent=2))
