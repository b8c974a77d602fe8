"""Write the review queue in the formats reviewers use (``review.formats``):

- ``queue.csv``: one line per item; references joined with `` | ``, one ``score_<name>``
  column per score, then ``reviewer`` and the rating fields, empty to be filled in;
- ``queue.jsonl``: the same rows as JSON objects (references a list, scores an object);
- ``label_studio/config.xml`` + ``label_studio/tasks.json``: a Label Studio project's labeling
  config and its tasks (images as local-files URLs under the document root, see README);
- ``review_sheet.html``: the offline review sheet that saves its ratings as a CSV.

``sample.parquet`` (every column of the sampled per-sample rows, metadata included) is always
written: the ingest reads the scores, strategies and slices from it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from tasks.config import RatingField, ReviewConfig, ReviewFormat
from tasks.io import s3_client, split_s3, write_parquet
from tasks.review.queue import REVIEWER_COLUMN, score_names

SAMPLE_FILE = "sample.parquet"
QUEUE_CSV = "queue.csv"
QUEUE_JSONL = "queue.jsonl"
SHEET_FILE = "review_sheet.html"
LABEL_STUDIO_DIR = "label_studio"
# where Label Studio serves local files from; default: the images' common folder
DOCUMENT_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"


def write_queue(sample: pd.DataFrame, queue: pd.DataFrame, config: ReviewConfig, folder: Path,
                title: str) -> dict[str, Path]:
    """Write the sample and every configured queue format into ``folder``; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(sample, folder / SAMPLE_FILE)
    written = {SAMPLE_FILE: folder / SAMPLE_FILE}
    writers = {ReviewFormat.csv: _csv, ReviewFormat.jsonl: _jsonl,
               ReviewFormat.label_studio: _label_studio, ReviewFormat.sheet: _sheet}
    for fmt in config.formats:
        written |= writers[fmt](queue, config.schema_, folder, title)
    return written


def queue_table(queue: pd.DataFrame) -> pd.DataFrame:
    """The queue as flat columns: references joined, one ``score_<name>`` column per score,
    then ``reviewer`` and the rating fields."""
    cut = list(queue.columns).index(REVIEWER_COLUMN)
    head = queue.iloc[:, :cut].drop(columns=["scores"])
    head = head.assign(references=head["references"].map(" | ".join))
    scores = pd.DataFrame({f"score_{name}": queue["scores"].map(lambda s, n=name: s.get(n))
                           for name in score_names(queue)}, index=queue.index)
    return pd.concat([head, scores, queue.iloc[:, cut:]], axis=1)


def _csv(queue: pd.DataFrame, schema: list[RatingField], folder: Path, title: str
         ) -> dict[str, Path]:
    path = folder / QUEUE_CSV
    queue_table(queue).to_csv(path, index=False)
    return {QUEUE_CSV: path}


def _jsonl(queue: pd.DataFrame, schema: list[RatingField], folder: Path, title: str
           ) -> dict[str, Path]:
    path = folder / QUEUE_JSONL
    with path.open("w", encoding="utf-8") as handle:
        for record in queue.to_dict(orient="records"):
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return {QUEUE_JSONL: path}


def _label_studio(queue: pd.DataFrame, schema: list[RatingField], folder: Path, title: str
                  ) -> dict[str, Path]:
    from tasks.review.label_studio import label_studio_tasks, labeling_config, local_files_url

    target = folder / LABEL_STUDIO_DIR
    target.mkdir(exist_ok=True)
    texts = {role: bool(queue[role].map(bool).any()) for role in ("question", "prediction",
                                                                  "references")}
    root = document_root(queue["image_path"])
    tasks = label_studio_tasks(queue, schema, local_files_url(root))
    config = target / "config.xml"
    config.write_text(labeling_config(schema, texts), encoding="utf-8")
    tasks_path = target / "tasks.json"
    tasks_path.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    (target / "document_root.txt").write_text(f"{root}\n", encoding="utf-8")
    return {"label_studio/config.xml": config, "label_studio/tasks.json": tasks_path}


def document_root(image_paths: pd.Series) -> Path:
    """Label Studio's local-files document root: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT when
    set (every image must be under it), else the images' deepest common folder."""
    configured = os.environ.get(DOCUMENT_ROOT_ENV)
    if configured:
        return Path(configured).resolve()
    paths = [str(Path(p).resolve().parent) for p in image_paths] or [str(Path.cwd())]
    return Path(os.path.commonpath(paths))


def _sheet(queue: pd.DataFrame, schema: list[RatingField], folder: Path, title: str
           ) -> dict[str, Path]:
    from tasks.review.sheet import render_sheet

    path = folder / SHEET_FILE
    run_id = str(queue["run_id"].iloc[0]) if len(queue) else ""
    path.write_text(render_sheet(queue, schema, run_id, title), encoding="utf-8")
    return {SHEET_FILE: path}


def add_s3_tasks(review_dir: Path, uri: str, expires_s: int) -> Path | None:
    """For a queue published to ``uri`` (s3://bucket/prefix/review): copy its images into
    ``images/`` (published with it) and write ``label_studio/tasks_s3.json``, the tasks with
    presigned GET URLs of those objects valid ``expires_s`` seconds — import it into a Label
    Studio that reaches the S3 server. None when the queue has no Label Studio tasks."""
    from tasks.review.label_studio import presigned_url

    tasks_path = review_dir / LABEL_STUDIO_DIR / "tasks.json"
    if not tasks_path.is_file():
        return None
    images = _copy_images(review_dir)
    bucket, prefix = split_s3(uri)
    url = presigned_url(s3_client(), bucket, lambda review_id: f"{prefix}/images/"
                        f"{images[review_id]}", expires_s)
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    for task in tasks:
        task["data"]["image"] = url(str(task["data"]["review_id"]))
    target = tasks_path.with_name("tasks_s3.json")
    target.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    return target


def _copy_images(review_dir: Path) -> dict[str, str]:
    """Each distinct queue image copied to ``images/<n><suffix>``; review id -> file name."""
    key = json.loads((review_dir / "review.json").read_text(encoding="utf-8"))["row_key"]
    sample = pd.read_parquet(review_dir / SAMPLE_FILE, columns=[key, "image_path"])
    folder = review_dir / "images"
    folder.mkdir(exist_ok=True)
    names: dict[str, str] = {}
    for path in dict.fromkeys(sample["image_path"].astype(str)):
        names[path] = f"{len(names):05d}{Path(path).suffix.lower()}"
        if Path(path).is_file():
            shutil.copyfile(path, folder / names[path])
    return {str(k): names[str(p)] for k, p in zip(sample[key], sample["image_path"],
                                                   strict=True)}
