"""Karpathy splits of COCO and Flickr30K (``dataset_coco.json``, ``dataset_flickr30k.json``).

``dataset.path`` is the JSON file, ``dataset.root`` the image folder (COCO: the folder holding
``val2014/``; Flickr30K: ``flickr30k-images/``), ``dataset.split`` defaults to ``test``
(``train+restval`` selects several). The standard test splits carry their published sizes, so a
run scored on any other size is flagged in the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import DatasetConfig
from tasks.data.base import DataError, RawTable, open_data_file, register_source
from tasks.io import MAX_MANIFEST_BYTES, error_text

PROTOCOLS: dict[tuple[str, str], dict[str, Any]] = {
    ("coco", "test"): {"name": "COCO Karpathy test", "images": 5000, "texts": 25010},
    ("flickr30k", "test"): {"name": "Flickr30K Karpathy test", "images": 1000, "texts": 5000},
}


def read_split_file(path: Path) -> dict[str, Any]:
    """The parsed JSON, or a DataError saying what is wrong with it."""
    with open_data_file(path, "Karpathy split file") as handle:
        try:
            text = handle.read(MAX_MANIFEST_BYTES + 1)  # a file growing while read is refused
        except OSError as error:
            raise DataError(f"cannot read Karpathy split file {path}: {error_text(error)}") \
                from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise DataError(f"Karpathy split file {path} is over the limit of "
                        f"{MAX_MANIFEST_BYTES:,} bytes (MAX_MANIFEST_BYTES)")
    try:
        data = json.loads(text.decode("utf-8-sig"))
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
        raise DataError(f"cannot read Karpathy split file {path}: {error_text(error)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not a Karpathy split file: expected a JSON object with an "
                        "'images' list")
    return data


def dataset_name(data: dict[str, Any], path: Path) -> str:
    """``coco`` / ``flickr30k`` from the file's ``dataset`` key, else from its name."""
    name = data.get("dataset") or path.stem.removeprefix("dataset_")
    return str(name).lower()


def _joined(tokens: Any) -> Any:
    """The tokens of a sentence joined by spaces, or the value itself when it is not a list of
    strings."""
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return tokens


def image_row(entry: dict[str, Any]) -> dict[str, Any]:
    filename = entry["filename"]
    image = f"{entry['filepath']}/{filename}" if entry.get("filepath") else filename
    item_id = next((entry[k] for k in ("cocoid", "imgid") if entry.get(k) is not None), filename)
    sentences = [s for s in entry.get("sentences") or [] if isinstance(s, dict)]
    # raw values as they are: normalize rejects a caption that is not text
    captions = [s["raw"] if s.get("raw") else _joined(s.get("tokens")) for s in sentences]
    return {"id": str(item_id), "image": image, "captions": captions, "split": str(entry["split"])}


def collect_rows(images: list[Any], splits: set[str]) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of the wanted splits; an entry without a split, or a wanted one without a filename,
    becomes a reject."""
    rows, index, rejects = [], [], []
    for number, entry in enumerate(images):
        split = entry.get("split") if isinstance(entry, dict) else None
        if split is not None and str(split) not in splits:
            continue
        if split is None or not entry.get("filename"):
            rejects.append({"row": number, "item_id": str(number), "scope": "item",
                            "reason": "malformed image entry (needs filename and split)"})
            continue
        rows.append(image_row(entry))
        index.append(number)
    columns = ["id", "image", "captions", "split"]
    return pd.DataFrame(rows, index=index, columns=columns), rejects


@register_source("karpathy")
def load_karpathy(config: DatasetConfig) -> RawTable:
    path = Path(config.path).expanduser()
    data = read_split_file(path)
    split = config.split or "test"
    rows, rejects = collect_rows(data["images"], set(split.split("+")))
    root = Path(config.root).expanduser() if config.root else path.parent
    return RawTable(rows=rows, root=root, source_uri=str(path.resolve()), rejects=rejects,
                    protocol=PROTOCOLS.get((dataset_name(data, path), split)))
