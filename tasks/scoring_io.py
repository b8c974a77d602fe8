"""Read id -> value files for the ``bifocal score ...`` commands: JSON, JSONL or CSV.

Accepted shapes (``value_keys`` name the field holding the value, e.g. caption/captions):
- JSON object ``{id: value}``;
- JSON list of records ``[{"id"|"image_id"|"question_id": ..., "<value key>": ...}]``
  (the COCO results format), or a COCO annotations file ``{"annotations": [...]}``;
- JSONL with one record per line;
- CSV with an id column and a value column.
Records that repeat an id are gathered into a list when ``many`` is set (several references).

``captioning_inputs`` / ``vqa_inputs`` / ``classification_inputs`` pair a predictions file with
its ground truth by id and build the metric inputs; ids found in only one file are returned
with the reason they were skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ID_KEYS = ("id", "image_id", "question_id", "item_id")


class InputFileError(ValueError):
    """A predictions/references file that cannot be read; the message says which and why."""


def _id_of(record: dict[str, Any], path: Path) -> str:
    for key in ID_KEYS:
        if key in record:
            return str(record[key])
    raise InputFileError(f"{path}: record without an id field ({', '.join(ID_KEYS)}): {record}")


def _value_of(record: dict[str, Any], value_keys: Sequence[str], path: Path) -> Any:
    for key in value_keys:
        if key in record:
            return record[key]
    raise InputFileError(f"{path}: record without a value field ({', '.join(value_keys)})")


def _records(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        text = path.read_text(encoding="utf-8")
        if suffix in (".jsonl", ".ndjson"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except FileNotFoundError:
        raise InputFileError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputFileError(f"{path} is not valid JSON: {error}") from None


def read_mapping(path: str | Path, value_keys: Sequence[str], many: bool = False,
                 keep_records: bool = False) -> dict[str, Any]:
    """id -> value (or id -> list of values with ``many``; id -> the whole record with
    ``keep_records``, for records that carry several fields such as VQA answer types)."""
    path = Path(path)
    data = _records(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if isinstance(data, dict):
        return {str(k): (list(v) if many and isinstance(v, list) else [v] if many else v)
                for k, v in data.items()}
    if not isinstance(data, list):
        raise InputFileError(f"{path}: expected an object or a list of records")
    out: dict[str, Any] = {}
    for record in data:
        if not isinstance(record, dict):
            raise InputFileError(f"{path}: expected records (objects), got {record!r}")
        key, value = _id_of(record, path), _value_of(record, value_keys, path)
        if keep_records:
            value = record
        if many:
            values = value if isinstance(value, list) else [value]
            out.setdefault(key, []).extend(values)
        elif key in out:
            raise InputFileError(f"{path}: id {key!r} appears more than once")
        else:
            out[key] = value
    return out


def align(predictions: dict[str, Any], truth: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Ids present in both (in the truth file's order) and a reason for every other id."""
    both = [k for k in truth if k in predictions]
    skipped = {k: "no prediction" for k in truth if k not in predictions}
    skipped |= {k: "no reference/answer for this id" for k in predictions if k not in truth}
    return both, skipped


@dataclass
class ScoringInputs:
    inputs: Any  # the task's metric inputs (CaptionInputs, VQAInputs, ClassificationInputs)
    ids: list[str]
    skipped: dict[str, str]  # id -> why it was not scored


def _aligned(predictions: dict[str, Any], truth: dict[str, Any]) -> tuple[list[str],
                                                                         dict[str, str]]:
    ids, skipped = align(predictions, truth)
    if not ids:
        raise InputFileError(f"no id has both a prediction and ground truth ({len(skipped)} ids "
                             "unmatched): check that both files use the same ids")
    return ids, skipped


def captioning_inputs(predictions_path: str, references_path: str) -> ScoringInputs:
    from tasks.metrics.captioning import CaptionInputs

    predictions = read_mapping(predictions_path, ("caption", "prediction", "text"))
    references = read_mapping(references_path, ("captions", "caption", "references"), many=True)
    ids, skipped = _aligned(predictions, references)
    inputs = CaptionInputs(ids=ids, predictions=[str(predictions[i]) for i in ids],
                           references=[[str(r) for r in references[i]] for i in ids])
    return ScoringInputs(inputs, ids, skipped)


def vqa_answers(value: Any) -> tuple[list[str], str | None, str | None]:
    """Human answers from a list, or an object with answers (strings or the official VQA
    annotation's {"answer": ...} records), question_type and answer_type."""
    if isinstance(value, dict):
        answers = value.get("answers")
        if answers is None:
            raise InputFileError(f"answer object without 'answers': {value}")
        return ([a["answer"] if isinstance(a, dict) else str(a) for a in answers],
                value.get("question_type"), value.get("answer_type"))
    if isinstance(value, list):
        return [str(a) for a in value], None, None
    return [str(value)], None, None


def vqa_inputs(predictions_path: str, answers_path: str) -> ScoringInputs:
    from tasks.metrics.vqa import VQAInputs

    predictions = read_mapping(predictions_path, ("answer", "prediction", "text"))
    truth = read_mapping(answers_path, ("answers", "answer"), keep_records=True)
    ids, skipped = _aligned(predictions, truth)
    parsed = [vqa_answers(truth[i]) for i in ids]
    question_types = [p[1] for p in parsed]
    answer_types = [p[2] for p in parsed]
    inputs = VQAInputs(ids=ids, predictions=[str(predictions[i]) for i in ids],
                       answers=[p[0] for p in parsed],
                       question_types=question_types if any(question_types) else None,
                       answer_types=answer_types if any(answer_types) else None)
    return ScoringInputs(inputs, ids, skipped)


def classification_inputs(predictions_path: str, labels_path: str,
                          class_names: list[str] | None = None) -> ScoringInputs:
    from tasks.metrics.classification import ClassificationInputs

    predictions = read_mapping(predictions_path, ("prediction", "label", "class"))
    labels = read_mapping(labels_path, ("label", "class"))
    ids, skipped = _aligned(predictions, labels)
    inputs = ClassificationInputs(ids=ids, labels=[str(labels[i]) for i in ids],
                                  predictions=[str(predictions[i]) for i in ids],
                                  class_names=class_names)
    return ScoringInputs(inputs, ids, skipped)


def statistics_table(inputs: Any, per_sample: dict[str, Any]) -> Any:
    """The per-sample table that metric estimates read (``tasks.stats.estimates``): the
    metrics' per-sample arrays plus the inputs' per-sample fields (labels, predictions, VQA
    types); for retrieval, one row per image with its captions' ranks as a list."""
    import numpy as np
    import pandas as pd

    from tasks.metrics.retrieval import RetrievalInputs

    columns = dict(per_sample)
    if isinstance(inputs, RetrievalInputs):
        t2i = columns.pop("t2i_rank")
        owner = np.asarray(inputs.text_to_image)
        columns["t2i_ranks"] = [t2i[owner == i].tolist() for i in range(len(columns["i2t_rank"]))]
    for field, column in (("labels", "label"), ("predictions", "prediction"),
                          ("question_types", "question_type"), ("answer_types", "answer_type")):
        values = getattr(inputs, field, None)
        if values is not None and column not in columns and not isinstance(inputs, str):
            columns[column] = list(values)
    return pd.DataFrame(columns)
