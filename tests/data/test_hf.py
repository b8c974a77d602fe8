from pathlib import Path

import pytest

from tasks.config import DatasetConfig
from tasks.data import DataError, load_dataset
from tests.helpers import write_dataset


def test_save_to_disk_dataset_with_embedded_images(tmp_path: Path, monkeypatch):
    import datasets

    monkeypatch.setenv("BIFOCAL_HOME", str(tmp_path / "home"))
    source = tmp_path / "src"
    write_dataset(source, n=5)
    records = {"image": [str(source / "images" / f"{i:03d}.png") for i in range(5)],
               "sentences": [[f"caption {i}", f"other {i}"] for i in range(5)]}
    ds = datasets.Dataset.from_dict(records).cast_column("image", datasets.Image())
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    data = load_dataset(DatasetConfig(source="hf", path=str(tmp_path / "hf"), split="test",
                                      columns={"image": "image", "captions": "sentences",
                                               "id": None, "label": None}))
    assert len(data.items) == 5 and data.rejects.empty
    assert data.items["captions"].tolist()[0] == ["caption 0", "other 0"]
    assert all(Path(p).is_relative_to(tmp_path / "home") for p in data.items["image_path"])
    with pytest.raises(DataError, match="split 'train' not in dataset"):
        load_dataset(DatasetConfig(source="hf", path=str(tmp_path / "hf"), split="train",
                                   columns={"captions": "sentences"}))


def test_imagefolder_with_metadata(tmp_path: Path):
    import json

    folder = tmp_path / "folder"
    write_dataset(folder, n=3)
    with (folder / "images" / "metadata.jsonl").open("w") as handle:
        for i in range(3):
            handle.write(json.dumps({"file_name": f"{i:03d}.png",
                                     "captions": [f"a {i}", f"b {i}"]}) + "\n")
    (folder / "data.jsonl").unlink()
    data = load_dataset(DatasetConfig(source="hf", path=str(folder / "images"),
                                      columns={"id": None, "label": None}))
    assert sorted(map(tuple, data.items["captions"])) == [("a 0", "b 0"), ("a 1", "b 1"),
                                                          ("a 2", "b 2")]
    assert all(Path(p).parent == (folder / "images").resolve() for p in data.items["image_path"])


def test_missing_folder(tmp_path: Path):
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset(DatasetConfig(source="hf", path=str(tmp_path / "nope")))
