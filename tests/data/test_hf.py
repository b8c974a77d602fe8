import shutil
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


REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_hub_dataset(cache: Path, name: str, source: Path) -> None:
    """Put ``name`` into the datasets cache laid out as a Hub download leaves it, offline:
    ``<cache>/<org>___<name>/default/0.0.0/<commit>/<name>-test.arrow`` (what datasets' offline
    fallback, ``packaged_modules.cache``, reads)."""
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    org, short = name.split("/")
    write_dataset(source, n=3)
    images = [{"bytes": (source / "images" / f"{i:03d}.png").read_bytes(), "path": f"{i:03d}.png"}
              for i in range(3)]  # embedded, as in Hub parquet files
    table = datasets.Dataset.from_dict({"image": images,
                                        "captions": [[f"caption {i}"] for i in range(3)]})
    table.cast_column("image", datasets.Image()).to_parquet(source / "test.parquet")
    builder = Parquet(cache_dir=str(cache), dataset_name=short, hash=REVISION, config_id="default",
                      data_files={"test": str(source / "test.parquet")})
    builder.download_and_prepare()
    # a Hub download is cached under "<org>___<name>"; a local builder cannot claim a repo id
    (cache / short).rename(cache / f"{org}___{short}")


def test_cached_hub_dataset_by_name_loads_offline(tmp_path: Path, monkeypatch):
    import datasets

    monkeypatch.setenv("BIFOCAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # the source forces it on
    cache_hub_dataset(tmp_path / "hf-cache", "bifocal-test/tiny", tmp_path / "src")
    shutil.rmtree(tmp_path / "src")  # only the cache is left

    config = dict(source="hf", path="bifocal-test/tiny", split="test",
                  columns={"id": None, "label": None})
    data = load_dataset(DatasetConfig(**config, revision=REVISION))
    assert data.items["captions"].tolist() == [["caption 0"], ["caption 1"], ["caption 2"]]
    assert data.source_uri == "https://huggingface.co/datasets/bifocal-test/tiny"
    assert data.rejects.empty
    assert all(Path(p).is_relative_to(tmp_path / "home") for p in data.items["image_path"])
    assert datasets.config.HF_HUB_OFFLINE is False  # restored
    with pytest.raises(DataError, match="not at revision 'main'"):
        load_dataset(DatasetConfig(**config, revision="main"))


def test_hub_name_not_in_cache_is_a_clear_error(tmp_path: Path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-cache")
    with pytest.raises(DataError, match="nothing is downloaded") as error:
        load_dataset(DatasetConfig(source="hf", path="nobody/not-cached"))
    assert "neither a dataset folder nor a Hugging Face dataset" in str(error.value)
    assert str(tmp_path / "empty-cache") in str(error.value)
