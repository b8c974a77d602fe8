"""The review queue as a Label Studio project, and Label Studio's JSON export read back.

Plain functions over HTTP-free data: the project never imports Label Studio.

- :func:`labeling_config` writes the labeling config (XML) from the rating schema: the image, the
  texts the task kind shows (question, model output, references), and one control per rating
  field, each under a header with the field's title.
- :func:`label_studio_tasks` turns queue rows into Label Studio tasks (the import JSON).
- :func:`local_files_url` / :func:`presigned_url` say where Label Studio finds an image.
- :func:`read_label_studio_export` reads the JSON export back into one row per annotation.

Control names are the rating field names, so an export's ``from_name`` is the field; every control
points at the image (``toName="image"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

from tasks.config import RatingField
from tasks.review.errors import ReviewFileError
from tasks.review.queue import TEXT_ROLES, as_strings, text_or_none

IMAGE = "image"
# object tags of the config (and the data keys they show); control names must differ from them
OBJECT_NAMES = frozenset({IMAGE, *TEXT_ROLES})
TEXT_HEADERS = {"question": "Question", "prediction": "Model output",
                "references": "References (one per line)"}
SCORE_PREFIX = "score_"
MODEL_VERSION = "bifocal"
# the Label Studio result type and value key of each control a field becomes
_RESULT_KEYS = {"rating": "rating", "choices": "choices", "textarea": "text"}


# --- the labeling config ---------------------------------------------------------------------


def labeling_config(schema: list[RatingField], texts: Mapping[str, bool]) -> str:
    """The labeling config of a review project.

    ``texts`` says which text roles (question / prediction / references) the task kind shows,
    e.g. ``{role: True for role, _ in spec.review_texts}``; a role not given is not shown. A
    rating field named like an object tag (``image`` and the text roles) is refused
    (``ValueError``): Label Studio needs every tag name to be unique.
    """
    clashes = sorted(OBJECT_NAMES & {field.name for field in schema})
    if clashes:
        raise ValueError(f"rating field names {clashes} are reserved in the Label Studio config")
    lines = ["<View>", f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>']
    for role in TEXT_ROLES:
        if texts.get(role, False):
            lines += [_header(TEXT_HEADERS[role]), f'  <Text name="{role}" value="${role}"/>']
    for field in schema:
        lines += [_header(field.title or field.name), *_control(field)]
    return "\n".join([*lines, "</View>"])


def _header(text: str) -> str:
    return f"  <Header value={quoteattr(text)}/>"


def _control(field: RatingField) -> list[str]:
    """The control tag(s) of one field."""
    name = quoteattr(field.name)
    required = "true" if field.required and field.type != "text" else "false"
    if field.type == "rating" and field.min == 1:
        return [f'  <Rating name={name} toName="{IMAGE}" maxRating="{field.max}" '
                f'required="{required}"/>']
    if field.type == "text":
        return [f'  <TextArea name={name} toName="{IMAGE}" rows="3" maxSubmissions="1" '
                f'editable="true"/>']
    # Label Studio's <Rating> always starts at 1 (stars): another scale becomes the integers
    # min..max as single choices, which the export reader turns back into ints
    inline = ' showInline="true"' if field.type == "rating" else ""
    return [f'  <Choices name={name} toName="{IMAGE}" choice="single" required="{required}"'
            f"{inline}>",
            *(f"    <Choice value={quoteattr(value)}/>" for value in _choices(field)),
            "  </Choices>"]


def _choices(field: RatingField) -> list[str]:
    if field.type == "rating":
        return [str(value) for value in range(field.min, field.max + 1)]
    return list(field.choices)


def label_studio_result(schema: list[RatingField], answers: Mapping[str, Any]
                        ) -> list[dict[str, Any]]:
    """The ``result`` list of an annotation that gives ``answers`` (``{field: value}``: an int
    for a rating, one of the choices for a choice, a string for a text; a field left out or
    ``None`` stays unanswered) — what Label Studio stores when a reviewer submits them, and what
    :func:`read_label_studio_export` reads back."""
    return [_result_item(field, answers[field.name]) for field in schema
            if answers.get(field.name) is not None]


def _result_item(field: RatingField, answer: Any) -> dict[str, Any]:
    kind = _result_type(field)
    if kind == "rating":
        value: Any = int(answer)
    else:
        value = [str(answer)]
    return {"from_name": field.name, "to_name": IMAGE, "type": kind,
            "value": {_RESULT_KEYS[kind]: value}}


# --- the tasks to import ---------------------------------------------------------------------


def label_studio_tasks(queue: pd.DataFrame, schema: list[RatingField],
                       image_url: Callable[[str], str], headline: str | None = None
                       ) -> list[dict[str, Any]]:
    """One Label Studio task per queue row, in queue order (the JSON list to import).

    ``data`` holds the image URL (``image_url(image_path)``), the texts (``""`` when absent;
    references one per line), the row's ids and strategy, and each score flattened to a
    ``score_<name>`` key (the data manager shows, sorts and filters them as columns).

    Each task with scores carries one prediction with ``model_version`` ``bifocal``, the row's
    ``headline`` score (else its first score) as ``score`` (the data manager's "prediction score"
    column), and an **empty result**: nothing is pre-filled, since a rating pre-filled from a
    metric would anchor the reviewer whose judgement the review exists to collect. ``schema`` is
    taken for symmetry with the config; it does not change the tasks.
    """
    del schema  # the answers start empty (see above)
    return [_task(row, image_url, headline) for row in queue.to_dict("records")]


def _task(row: dict[str, Any], image_url: Callable[[str], str],
          headline: str | None) -> dict[str, Any]:
    scores = _finite(row.get("scores"))
    data = {IMAGE: image_url(str(row["image_path"])),
            **{key: _text_cell(row.get(key)) for key in ("question", "prediction", "review_id",
                                                     "run_id", "review_strategy", "status",
                                                     "reason")},
            "references": "\n".join(as_strings(row.get("references"))),
            **{SCORE_PREFIX + name: value for name, value in scores.items()}}
    task: dict[str, Any] = {"data": data}
    if scores:
        score = scores.get(headline or "", next(iter(scores.values())))
        task["predictions"] = [{"model_version": MODEL_VERSION, "score": score, "result": []}]
    return task


def _finite(scores: Any) -> dict[str, float]:
    """The scores JSON can carry (NaN and infinities dropped; no mapping: none)."""
    if not isinstance(scores, Mapping):
        return {}
    return {str(k): float(v) for k, v in scores.items() if math.isfinite(float(v))}


def local_files_url(document_root: Path) -> Callable[[str], str]:
    """Image path -> Label Studio's local-files URL ``/data/local-files/?d=<path>``.

    The path is taken relative to ``document_root`` (Label Studio's
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``), URL-quoted. Both are resolved first (symlinks,
    ``..``), and a path outside the root raises ``ValueError``: no URL escapes the root. Label
    Studio serves the file only with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and a
    local-files storage of the project whose path contains it.
    """
    root = document_root.resolve()

    def url(image_path: str) -> str:
        path = Path(image_path).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"image {image_path} lies outside the document root {root}")
        return "/data/local-files/?d=" + quote(path.relative_to(root).as_posix(), safe="/")

    return url


def presigned_url(client: Any, bucket: str, key_of_path: Callable[[str], str],
                  expires_s: int = 7 * 24 * 3600) -> Callable[[str], str]:
    """Image path -> a presigned S3 GET URL of ``key_of_path(path)`` in ``bucket``.

    ``client`` is a boto3 S3 client; URLs stop working after ``expires_s`` seconds (SigV4 allows
    at most 7 days). ``key_of_path`` may raise ``ValueError`` for a path it cannot map.
    """

    def url(image_path: str) -> str:
        params = {"Bucket": bucket, "Key": key_of_path(image_path)}
        return str(client.generate_presigned_url("get_object", Params=params,
                                                 ExpiresIn=expires_s))

    return url


# --- the export read back --------------------------------------------------------------------


def read_label_studio_export(path: Path, schema: list[RatingField]) -> pd.DataFrame:
    """Label Studio's JSON export as one row per (task, annotation), in file order.

    Columns: ``review_id``, ``run_id`` (from the task's data), ``reviewer`` (the annotator's email
    when the export has it, else ``user-<id>``), one column per schema field (rating: ``Int64``,
    ``<NA>`` when unanswered; choice and text: ``str``, ``""`` when unanswered; a text area's lines
    joined by newlines) and ``source`` (``"<file name>: task <id>, annotation <id>"``).

    Cancelled (skipped) annotations are left out; their count is ``frame.attrs["cancelled"]``.
    A file that is not JSON, not a list of tasks, a task without ``data.review_id``, or an
    answer that does not fit its field (a rating not an int in range, a choice not among the
    choices, a result for an unknown field) raises ``ReviewFileError`` naming the file and the
    task / annotation. Rows are not checked against each other or against a queue.
    """
    tasks = _load(path)
    fields = {field.name: field for field in schema}
    rows: list[dict[str, Any]] = []
    cancelled = 0
    for index, task in enumerate(tasks):
        where = f"task {_task_id(task, index)}"
        for annotation in _annotations(path, task, where):
            if annotation.get("was_cancelled"):
                cancelled += 1
                continue
            rows.append(_row(path, where, task, annotation, fields))
    frame = _frame(rows, schema)
    frame.attrs["cancelled"] = cancelled
    return frame


def _load(path: Path) -> list[Any]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReviewFileError(f"{path}: not a readable JSON file: {error}") from error
    if not isinstance(tasks, list):
        raise ReviewFileError(f"{path}: not a Label Studio JSON export (a list of tasks)")
    return tasks


def _annotations(path: Path, task: Any, where: str) -> list[dict[str, Any]]:
    """The task's annotations, once the task is checked to be a task with a review_id."""
    where = f"{path}: {where}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise ReviewFileError(f"{where}: not a task with data")
    if task["data"].get("review_id") in (None, ""):
        raise ReviewFileError(f"{where}: data has no review_id")
    annotations = task.get("annotations")
    annotations = [] if annotations is None else annotations
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ReviewFileError(f"{where}: annotations is not a list of annotations")
    return annotations


def _task_id(task: Any, index: int) -> str:
    if isinstance(task, dict) and task.get("id") is not None:
        return str(task["id"])
    return f"#{index + 1}"


def _row(path: Path, where: str, task: dict[str, Any], annotation: dict[str, Any],
         fields: Mapping[str, RatingField]) -> dict[str, Any]:
    where = f"{where}, annotation {annotation.get('id', '?')}"
    try:
        answers = _answers(annotation.get("result"), fields)
    except ValueError as error:
        raise ReviewFileError(f"{path}: {where}: {error}") from error
    data = task["data"]
    return {"review_id": str(data["review_id"]), "run_id": str(data.get("run_id") or ""),
            "reviewer": _reviewer(annotation.get("completed_by")), **answers,
            "source": f"{path.name}: {where}"}


def _reviewer(completed_by: Any) -> str:
    """The annotator's email when the export carries it, else ``user-<id>``."""
    if isinstance(completed_by, dict):
        if completed_by.get("email"):
            return str(completed_by["email"])
        completed_by = completed_by.get("id")
    return f"user-{completed_by}"


def _answers(result: Any, fields: Mapping[str, RatingField]) -> dict[str, Any]:
    """``{field: answer}`` of one annotation's result list (``ValueError`` when one is off)."""
    if not isinstance(result, list):
        raise ValueError("result is not a list")
    answers: dict[str, Any] = {}
    for item in result:
        name = item.get("from_name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in fields:
            raise ValueError(f"result for unknown field {name!r}")
        if name in answers:
            raise ValueError(f"two results for field {name!r}")
        answers[name] = _answer(fields[name], item)
    return answers


def _answer(field: RatingField, item: dict[str, Any]) -> Any:
    kind, value = item.get("type"), item.get("value")
    expected = _result_type(field)
    if kind != expected or not isinstance(value, dict) or _RESULT_KEYS[expected] not in value:
        raise ValueError(f"field {field.name!r} expects a {expected} result, got {kind!r}")
    answer = value[_RESULT_KEYS[expected]]
    if field.type == "text":
        return _text_answer(field, answer)
    if expected == "choices":
        answer = _single_choice(field, answer)
        # a scale other than 1..max is asked as choices "min".."max"
        return int(answer) if field.type == "rating" else answer
    return _rating(field, answer)


def _result_type(field: RatingField) -> str:
    if field.type == "text":
        return "textarea"
    return "rating" if field.type == "rating" and field.min == 1 else "choices"


def _text_cell(value: Any) -> str:
    """A text of the task: ``""`` for None / NaN."""
    return text_or_none(value) or ""


def _text_answer(field: RatingField, answer: Any) -> str:
    lines = [answer] if isinstance(answer, str) else answer
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ValueError(f"text {field.name!r} is not a list of strings: {answer!r}")
    return "\n".join(lines)


def _single_choice(field: RatingField, answer: Any) -> str:
    if not isinstance(answer, list) or len(answer) != 1 or answer[0] not in _choices(field):
        raise ValueError(f"{field.name!r}: {answer!r} is not one of {_choices(field)}")
    return str(answer[0])


def _rating(field: RatingField, answer: Any) -> int:
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise ValueError(f"rating {field.name!r} is not an integer: {answer!r}")
    if not field.min <= answer <= field.max:
        raise ValueError(f"rating {field.name!r} = {answer} is outside {field.min}..{field.max}")
    return answer


def _frame(rows: Iterable[dict[str, Any]], schema: list[RatingField]) -> pd.DataFrame:
    columns = ["review_id", "run_id", "reviewer", *(f.name for f in schema), "source"]
    frame = pd.DataFrame(list(rows), columns=columns)
    for field in schema:
        if field.type == "rating":
            frame[field.name] = frame[field.name].astype("Int64")
        else:
            frame[field.name] = frame[field.name].fillna("").astype(str)
    return frame
