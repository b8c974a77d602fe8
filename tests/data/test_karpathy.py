import json
from pathlib import Path

import numpy as np
import pytest

from tasks.config import DatasetConfig, EvalConfig
from tasks.data import DataError, load_dataset
from tasks.data.base import save_dataset
from tasks.kinds.base import InferenceRef
from tasks.kinds.retrieval.score import protocol_warning, score
from tests.helpers import draw

COCO_TEST = {"name": "COCO Karpathy test", "images": 5000, "texts": 25010}


def coco_entry(index: int, split: str, folder: str = "val2014") -> dict:
    filename = f"COCO_{folder}_{index:012d}.jpg"
    return {"filepath": folder, "filename": filename, "split": split, "cocoid": 1000 + index,
            "imgid": index, "sentids": [5 * index + j for j in range(5)],
            "sentences": [{"raw": f" A photo number {index} caption {j}. ",
                           "tokens": ["a", "photo"]} for j in range(5)]}


def write_coco(root: Path) -> Path:
    """Two train, three test (one of them without its image file) and one restval image."""
    entries = [coco_entry(0, "train", "train2014"), coco_entry(1, "train", "train2014"),
               coco_entry(2, "test"), coco_entry(3, "test"), coco_entry(4, "test"),
               coco_entry(5, "restval")]
    for entry in entries[:4] + entries[5:]:
        draw(root / "images" / entry["filepath"] / entry["filename"], (entry["imgid"] * 40, 0, 0))
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path


def karpathy(path: Path, **kwargs) -> DatasetConfig:
    return DatasetConfig(source="karpathy", path=str(path), root=str(path.parent / "images"),
                         **kwargs)


def test_coco_test_split_with_ids_captions_and_protocol(tmp_path: Path):
    data = load_dataset(karpathy(write_coco(tmp_path)))
    assert data.items["item_id"].tolist() == ["1002", "1003"]  # cocoid
    assert data.items["image"].tolist()[0] == "val2014/COCO_val2014_000000000002.jpg"
    assert data.items["captions"].tolist()[0] == [f"A photo number 2 caption {j}."
                                                  for j in range(5)]
    assert data.rejects["reason"].tolist() == ["image file not found"]
    assert data.rows_in == 3 and data.protocol == COCO_TEST
    ref = save_dataset(data, tmp_path / "run")
    assert ref.protocol == COCO_TEST


def test_other_splits_flickr_ids_and_no_protocol(tmp_path: Path):
    data = load_dataset(karpathy(write_coco(tmp_path), split="train+restval"))
    assert data.items["item_id"].tolist() == ["1000", "1001", "1005"]
    assert data.protocol is None

    entries = [{"filename": f"{i}.jpg", "split": "test", "imgid": i,
                "sentences": [{"raw": f"caption {i}"}]} for i in range(2)]
    entries.append({"filename": "named.jpg", "split": "test", "sentences": [{"raw": "c"}]})
    for entry in entries:
        draw(tmp_path / "flickr30k-images" / entry["filename"], (0, 0, 200))
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    flickr = load_dataset(DatasetConfig(source="karpathy", path=str(path),
                                        root=str(tmp_path / "flickr30k-images")))
    assert flickr.items["item_id"].tolist() == ["0", "1", "named.jpg"]
    assert flickr.protocol == {"name": "Flickr30K Karpathy test", "images": 1000, "texts": 5000}


def test_malformed_files_and_entries(tmp_path: Path):
    path = tmp_path / "dataset_coco.json"
    with pytest.raises(DataError, match="Karpathy split file not found"):
        load_dataset(karpathy(path))
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="cannot read Karpathy split file"):
        load_dataset(karpathy(path))
    path.write_text('{"annotations": []}')
    with pytest.raises(DataError, match="expected a JSON object with an 'images' list"):
        load_dataset(karpathy(path))
    draw(tmp_path / "images" / "ok.jpg", (0, 200, 0))
    entries = [{"filename": "ok.jpg", "split": "test", "sentences": [{"raw": "fine"}]},
               {"split": "test", "sentences": []}, "not an entry",
               {"filename": "../escape.jpg", "split": "test", "sentences": [{"raw": "x"}]}]
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    data = load_dataset(karpathy(path))
    assert data.items["item_id"].tolist() == ["ok.jpg"]
    reasons = data.rejects["reason"].tolist()
    assert reasons.count("malformed image entry (needs filename and split)") == 2
    assert any("escapes the dataset root" in r for r in reasons)


def test_protocol_warning_helper():
    assert protocol_warning(None, 3, 15) is None
    assert protocol_warning(COCO_TEST, 5000, 25010) is None
    assert protocol_warning(COCO_TEST, 4998, 24990) == (
        "COCO Karpathy test protocol is 5,000 images / 25,010 captions; this run scored "
        "4,998 / 24,990 — numbers are not comparable to published results")


def test_retrieval_score_warns_when_protocol_sizes_differ(tmp_path: Path):
    ref = save_dataset(load_dataset(karpathy(write_coco(tmp_path))), tmp_path / "run" / "data")
    shard = tmp_path / "shard"
    shard.mkdir()
    rng = np.random.default_rng(0)
    np.save(shard / "image_embeddings.npy", rng.normal(size=(2, 8)).astype(np.float32))
    np.save(shard / "text_embeddings.npy", rng.normal(size=(10, 8)).astype(np.float32))
    inference = InferenceRef(fingerprint="f", shard_folders=[str(shard)], shards_cached=0,
                             model_fingerprint="m", code_version="c")
    config = EvalConfig(model={"path": "unused"}, dataset={"path": "unused"})
    scores = score(ref, inference, config, tmp_path / "run")
    assert ("COCO Karpathy test protocol is 5,000 images / 25,010 captions; this run scored "
            "2 / 10 — numbers are not comparable to published results") in scores.warnings
