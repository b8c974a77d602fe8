"""The Label Studio export of the review queue and the reader of Label Studio's JSON export.

Unit tests run on hand-written data; the end-to-end test (e2e, slow) runs a real Label Studio
server (tests/label_studio_server.py): project, import, scripted reviewers, export, read back.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.config import RatingField, ReviewConfig
from tasks.review.errors import ReviewFileError
from tasks.review.label_studio import (
    label_studio_result,
    label_studio_tasks,
    labeling_config,
    local_files_url,
    presigned_url,
    read_label_studio_export,
)
from tasks.review.queue import QUEUE_COLUMNS, REVIEWER_COLUMN
from tests.helpers import COLORS, draw

ALL_TEXTS = {"question": True, "prediction": True, "references": True}
TRICKY = 'Is it <good> & "right"? it\'s $5'


def default_schema() -> list[RatingField]:
    return list(ReviewConfig().schema_)


def wide_schema() -> list[RatingField]:
    """The default fields plus a 0..4 scale (asked as choices) and a tricky title."""
    return [*default_schema(),
            RatingField(name="fluency", type="rating", min=0, max=4, title=TRICKY),
            RatingField(name="style", type="choice", choices=["plain", "a & b", "<odd>"],
                        required=False)]


def make_queue(root: Path, n: int = 12, run_id: str = "run-1") -> pd.DataFrame:
    """A queue in ``build_queue``'s shape with ``n`` real PNGs under ``root``."""
    colors = list(COLORS)
    rows = []
    for index in range(n):
        color = colors[index % len(colors)]
        image = root / "images" / f"item {index:02d}.png"
        draw(image, COLORS[color], size=6 + index)
        scores = {"clip_score": round(index / (n - 1), 3), "bleu": 0.25} if index != 3 else {}
        rows.append({"review_id": f"item-{index}", "run_id": run_id,
                     "review_strategy": "worst" if index % 2 else "random",
                     "status": "failed" if index == 3 else "scored",
                     "reason": "timeout" if index == 3 else "", "image_path": str(image),
                     "question": f"what colour is item {index}?" if index % 3 else None,
                     "prediction": f"a {color} square", "references": [color, f"a {color} one"],
                     "scores": scores})
    queue = pd.DataFrame(rows, columns=list(QUEUE_COLUMNS))
    queue[REVIEWER_COLUMN] = ""
    return queue


# --- the labeling config -----------------------------------------------------------------------


def test_config_parses_with_one_control_per_field():
    schema = wide_schema()
    root = ET.fromstring(labeling_config(schema, ALL_TEXTS))
    controls = [e for e in root if e.get("toName") == "image"]
    assert [e.get("name") for e in controls] == [f.name for f in schema]
    assert [e.tag for e in controls] == ["Rating", "Choices", "TextArea", "Choices", "Choices"]
    assert root.find("Image").attrib == {"name": "image", "value": "$image", "zoom": "true"}
    assert [e.get("name") for e in root.iter("Text")] == ["question", "prediction", "references"]


def test_config_rating_scales():
    schema = wide_schema()
    root = ET.fromstring(labeling_config(schema, ALL_TEXTS))
    stars = root.find("Rating[@name='relevance']")
    assert stars.get("maxRating") == "5" and stars.get("required") == "true"
    scale = root.find("Choices[@name='fluency']")
    assert [c.get("value") for c in scale] == ["0", "1", "2", "3", "4"]
    assert scale.get("choice") == "single" and scale.get("showInline") == "true"


def test_config_choices_and_text():
    root = ET.fromstring(labeling_config(wide_schema(), ALL_TEXTS))
    verdict = root.find("Choices[@name='verdict']")
    assert [c.get("value") for c in verdict] == ["correct", "incorrect"]
    assert verdict.get("required") == "true"
    assert root.find("Choices[@name='style']").get("required") == "false"
    comment = root.find("TextArea[@name='comment']")
    assert comment.get("required") is None


def test_config_escapes_titles_and_choices():
    root = ET.fromstring(labeling_config(wide_schema(), ALL_TEXTS))
    headers = [e.get("value") for e in root.iter("Header")]
    assert TRICKY in headers and "Comment" in headers
    assert [c.get("value") for c in root.find("Choices[@name='style']")] == [
        "plain", "a & b", "<odd>"]


def test_config_shows_only_the_kind_texts():
    root = ET.fromstring(labeling_config(default_schema(), {"prediction": True,
                                                            "references": False}))
    assert [e.get("name") for e in root.iter("Text")] == ["prediction"]
    assert len(list(root.iter("Header"))) == 1 + 3


def test_config_refuses_field_names_of_object_tags():
    with pytest.raises(ValueError, match="'question' is a column of the review queue"):
        RatingField(name="question", type="rating")
    schema = [RatingField.model_construct(name="image", type="text", title=None, min=1, max=5,
                                          choices=[], required=False)]
    with pytest.raises(ValueError, match="reserved"):  # a schema built around the validator
        labeling_config(schema, ALL_TEXTS)


# --- the tasks ---------------------------------------------------------------------------------


def test_tasks_data_and_predictions(tmp_path: Path):
    queue = make_queue(tmp_path, n=5)
    tasks = label_studio_tasks(queue, default_schema(), lambda path: "url:" + Path(path).name)
    assert len(tasks) == 5
    first = tasks[0]
    assert first["data"] == {
        "image": "url:item 00.png", "question": "", "prediction": "a red square",
        "references": "red\na red one", "review_id": "item-0", "run_id": "run-1",
        "review_strategy": "random", "status": "scored", "reason": "",
        "score_clip_score": 0.0, "score_bleu": 0.25}
    assert first["predictions"] == [{"model_version": "bifocal", "score": 0.0, "result": []}]
    assert tasks[1]["data"]["question"] == "what colour is item 1?"
    json.dumps(tasks, allow_nan=False)


def test_tasks_headline_score_and_failed_rows(tmp_path: Path):
    queue = make_queue(tmp_path, n=5)
    queue.at[4, "scores"] = {"clip_score": float("nan"), "bleu": 0.5}
    tasks = label_studio_tasks(queue, default_schema(), str, headline="bleu")
    assert tasks[0]["predictions"][0]["score"] == 0.25
    assert "predictions" not in tasks[3] and tasks[3]["data"]["reason"] == "timeout"
    assert "score_clip_score" not in tasks[4]["data"]
    json.dumps(tasks, allow_nan=False)


# --- image URLs --------------------------------------------------------------------------------


def test_local_files_url_quotes_paths_under_the_root(tmp_path: Path):
    url = local_files_url(tmp_path)
    assert url(str(tmp_path / "images" / "a b#?&é.png")) == (
        "/data/local-files/?d=images/a%20b%23%3F%26%C3%A9.png")


def test_local_files_url_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert local_files_url(Path("."))("x/y.png") == "/data/local-files/?d=x/y.png"


@pytest.mark.parametrize("escape", ["../outside.png", "images/../../outside.png", "/etc/passwd",
                                    "link/secret.png"])
def test_local_files_url_refuses_escapes(tmp_path: Path, escape: str):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    path = escape if escape.startswith("/") else str(root / escape)
    with pytest.raises(ValueError, match="outside the document root"):
        local_files_url(root)(path)


class FakeS3:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], int]] = []

    def generate_presigned_url(self, operation: str, Params: dict[str, Any],  # noqa: N803
                               ExpiresIn: int) -> str:  # noqa: N803
        self.calls.append((operation, Params, ExpiresIn))
        return f"https://s3.test/{Params['Bucket']}/{Params['Key']}?sig"


def test_presigned_url_with_a_fake_client():
    client = FakeS3()
    url = presigned_url(client, "bucket", lambda path: "queue/" + Path(path).name, expires_s=60)
    assert url("/data/a.png") == "https://s3.test/bucket/queue/a.png?sig"
    assert client.calls == [("get_object", {"Bucket": "bucket", "Key": "queue/a.png"}, 60)]


def test_presigned_url_serves_the_image(s3_server, tmp_path: Path):
    import requests

    client = s3_server.client()
    bucket = s3_server.new_bucket("review")
    image = tmp_path / "a.png"
    draw(image, COLORS["red"])
    client.put_object(Bucket=bucket, Key="images/a.png", Body=image.read_bytes())
    url = presigned_url(client, bucket, lambda path: "images/" + Path(path).name)(str(image))
    assert requests.get(url, timeout=30).content == image.read_bytes()


# --- the export reader -------------------------------------------------------------------------


def rating(name: str, value: Any, kind: str = "rating") -> dict[str, Any]:
    key = {"rating": "rating", "choices": "choices", "textarea": "text"}[kind]
    return {"from_name": name, "to_name": "image", "type": kind, "value": {key: value}}


def export_task(task_id: int, review_id: Any, *annotations: dict[str, Any]) -> dict[str, Any]:
    return {"id": task_id, "data": {"review_id": review_id, "run_id": "run-1", "image": "x"},
            "annotations": list(annotations), "predictions": []}


def annotation(annotation_id: int, result: list[dict[str, Any]], by: Any = 7,
               cancelled: bool = False) -> dict[str, Any]:
    return {"id": annotation_id, "completed_by": by, "result": result,
            "was_cancelled": cancelled, "ground_truth": False}


def write_export(path: Path, tasks: Any) -> Path:
    path.write_text(json.dumps(tasks))
    return path


def test_reader_reads_every_answer(tmp_path: Path):
    schema = wide_schema()
    full = label_studio_result(schema, {"relevance": 4, "verdict": "correct", "comment": "ok & <b>",
                                        "fluency": 0, "style": "a & b"})
    tasks = [export_task(12, "item-1", annotation(3, full, by={"id": 7, "email": "r@x.org"}),
                         annotation(4, [], cancelled=True)),
             export_task(13, 5, annotation(5, [rating("verdict", ["incorrect"], "choices"),
                                               rating("comment", ["two", "lines"], "textarea")])),
             export_task(14, "item-3")]
    frame = read_label_studio_export(write_export(tmp_path / "export.json", tasks), schema)
    assert frame.attrs["cancelled"] == 1
    assert list(frame.columns) == ["review_id", "run_id", "reviewer", "relevance", "verdict",
                                   "comment", "fluency", "style", "source"]
    assert frame.iloc[0].tolist() == ["item-1", "run-1", "r@x.org", 4, "correct", "ok & <b>", 0,
                                      "a & b", "export.json: task 12, annotation 3"]
    second = frame.iloc[1]
    assert (second["review_id"], second["reviewer"], second["comment"]) == ("5", "user-7",
                                                                            "two\nlines")
    assert pd.isna(second["relevance"]) and pd.isna(second["fluency"]) and second["style"] == ""
    assert str(frame["relevance"].dtype) == "Int64"


def test_result_round_trips_through_the_reader(tmp_path: Path):
    schema = wide_schema()
    answers = {"relevance": 1, "verdict": "incorrect", "fluency": 4}
    tasks = [export_task(1, "a", annotation(1, label_studio_result(schema, answers)))]
    frame = read_label_studio_export(write_export(tmp_path / "e.json", tasks), schema)
    row = frame.iloc[0]
    assert {name: row[name] for name in answers} == answers
    assert row["comment"] == "" and row["style"] == ""


def test_reader_of_an_empty_export(tmp_path: Path):
    frame = read_label_studio_export(write_export(tmp_path / "e.json", []), default_schema())
    assert frame.empty and frame.attrs["cancelled"] == 0
    assert "relevance" in frame.columns


GOOD = [rating("relevance", 3)]
MALFORMED: dict[str, tuple[Any, str]] = {
    "rating not an int": ([rating("relevance", "4")], "not an integer"),
    "rating a float": ([rating("relevance", 4.5)], "not an integer"),
    "rating a bool": ([rating("relevance", True)], "not an integer"),
    "rating out of range": ([rating("relevance", 6)], "outside 1..5"),
    "scale choice not an int": ([rating("fluency", ["x"], "choices")], "not one of"),
    "choice not among choices": ([rating("verdict", ["maybe"], "choices")], "not one of"),
    "two choices": ([rating("verdict", ["correct", "incorrect"], "choices")], "not one of"),
    "unknown field": ([rating("beauty", 3)], "unknown field 'beauty'"),
    "wrong control type": ([rating("verdict", 3)], "expects a choices result"),
    "text not strings": ([rating("comment", [3], "textarea")], "not a list of strings"),
    "same field twice": ([*GOOD, *GOOD], "two results"),
    "result not a list": ({"relevance": 3}, "result is not a list"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_reader_refuses_malformed_answers(tmp_path: Path, case: str):
    result, message = MALFORMED[case]
    tasks = [export_task(11, "a", annotation(2, GOOD)),
             export_task(12, "b", annotation(2, GOOD), annotation(3, result))]
    path = write_export(tmp_path / "export.json", tasks)
    with pytest.raises(ReviewFileError, match=message) as error:
        read_label_studio_export(path, wide_schema())
    assert f"{path}: task 12, annotation 3: " in str(error.value)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a readable JSON file"),
    ('{"tasks": []}', "not a Label Studio JSON export"),
    ('[{"id": 12, "data": {"image": "x"}, "annotations": []}]', "task 12: data has no review_id"),
    ('[{"id": 12, "annotations": []}]', "task 12: not a task with data"),
    ('["text"]', "task #1: not a task with data"),
    ('[{"id": 12, "data": {"review_id": "a"}, "annotations": {}}]', "task 12: annotations is"),
])
def test_reader_refuses_malformed_files(tmp_path: Path, content: str, message: str):
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(ReviewFileError, match=message) as error:
        read_label_studio_export(path, default_schema())
    assert str(error.value).startswith(f"{path}: ")


# --- end to end: a real Label Studio server ----------------------------------------------------


SKIPPED_ROW, DOUBLE_ROWS = 7, 6


def scripted_reviewer(row: dict[str, Any], reviewer: int) -> dict[str, Any] | str | None:
    """Deterministic answers: ratings follow the row's score plus seeded noise; reviewer 0
    answers every row but skips one, reviewer 1 answers the first six."""
    from tests.label_studio_server import SKIP

    index = int(row["review_id"].split("-")[1])
    if reviewer == 1 and index >= DOUBLE_ROWS:
        return None
    if reviewer == 0 and index == SKIPPED_ROW:
        return SKIP
    noise = random.Random(f"{row['review_id']}/{reviewer}")
    score = row["scores"].get("clip_score", 0.0)
    answers: dict[str, Any] = {
        "relevance": min(5, max(1, round(1 + 4 * score + noise.choice([-1, 0, 0, 1])))),
        "verdict": "correct" if score + noise.uniform(-0.2, 0.2) >= 0.5 else "incorrect",
        "fluency": noise.randint(0, 4),
        "style": noise.choice(["plain", "a & b", "<odd>", None])}
    if index % 2 == 0:
        answers["comment"] = f"reviewer {reviewer}: score {score:.2f} & <fine>\nsecond line"
    return answers


def expected(submitted: pd.DataFrame, schema: list[RatingField]) -> pd.DataFrame:
    """What the reader should give for the submitted answers (unanswered: <NA> or "")."""
    frame = submitted.copy()
    for field in schema:
        if field.type == "rating":
            frame[field.name] = frame[field.name].astype("Int64")
        else:
            frame[field.name] = frame[field.name].fillna("").astype(str)
    return sort(frame)


def sort(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["review_id", "reviewer"]).reset_index(drop=True)


@pytest.mark.e2e
@pytest.mark.slow
def test_review_round_trip_through_label_studio(label_studio, tmp_path: Path):
    from tests.label_studio_server import annotate_queue

    schema, queue = wide_schema(), make_queue(tmp_path / "dataset")
    trip = annotate_queue(label_studio, queue, schema, scripted_reviewer,
                          tmp_path / "export.json")
    check_project(label_studio, trip.project_id, queue, schema)
    frame = read_label_studio_export(trip.export_path, schema)
    assert frame.attrs["cancelled"] == trip.skipped == 1
    assert len(frame) == len(queue) - 1 + DOUBLE_ROWS
    pd.testing.assert_frame_equal(sort(frame.drop(columns="source")),
                                  expected(trip.submitted, schema))
    assert frame["source"].str.match(r"export\.json: task \d+, annotation \d+$").all()
    check_export_by_user_id(label_studio, trip, schema, tmp_path)


@pytest.mark.e2e
@pytest.mark.slow
def test_client_refreshes_an_expired_access_token(label_studio):
    """Access tokens last 5 minutes: a 401 makes the client refresh it from its personal access
    token and retry; logging in again revokes the previous personal access token."""
    from tests.label_studio_server import LabelStudioClient, LabelStudioError

    client = LabelStudioClient.signup(label_studio.url, "refresh@bifocal.test", "refresh-pw-1")
    client.http.headers["Authorization"] = "Bearer expired"
    assert client.call("GET", "/api/current-user/whoami")["email"] == "refresh@bifocal.test"
    again = LabelStudioClient.login(label_studio.url, "refresh@bifocal.test", "refresh-pw-1")
    assert again.user_id == client.user_id
    client.http.headers.pop("Authorization")
    with pytest.raises(LabelStudioError, match="401"):
        client.call("GET", "/api/current-user/whoami")


def check_project(server, project_id: int, queue: pd.DataFrame,
                  schema: list[RatingField]) -> None:
    """The server kept the config and the tasks, and serves a task's image to a user only."""
    import requests

    project = server.admin.project(project_id)
    assert project["label_config"] == labeling_config(schema, ALL_TEXTS)
    assert set(project["parsed_label_config"]) == {field.name for field in schema}
    tasks = server.admin.tasks(project_id)
    assert [task["data"]["review_id"] for task in tasks] == queue["review_id"].tolist()
    assert [task["total_predictions"] for task in tasks] == [
        int(bool(scores)) for scores in queue["scores"]]
    assert tasks[5]["data"]["score_clip_score"] == queue.at[5, "scores"]["clip_score"]
    image = server.admin.request("GET", tasks[5]["data"]["image"])
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    assert image.content == Path(queue.at[5, "image_path"]).read_bytes()
    anonymous = requests.get(server.url + tasks[5]["data"]["image"], timeout=30)
    assert anonymous.status_code in (401, 403)  # not served without a login


def check_export_by_user_id(server, trip, schema: list[RatingField], tmp_path: Path) -> None:
    """The direct export names annotators by id only: ``user-<id>``."""
    path = server.admin.export(trip.project_id, tmp_path / "by-id.json", emails=False)
    frame = read_label_studio_export(path, schema)
    ids = {f"user-{server.user(email).user_id}": email for email in trip.submitted["reviewer"]}
    assert set(frame["reviewer"]) == set(ids)
    frame["reviewer"] = frame["reviewer"].map(ids)
    pd.testing.assert_frame_equal(sort(frame.drop(columns="source")),
                                  expected(trip.submitted, schema))
