import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import DatasetConfig
from tasks.data import DataError, load_dataset
from tests.helpers import draw, write_dataset


def load(path: Path, **kwargs):
    return load_dataset(DatasetConfig(path=str(path), **kwargs))


def test_jsonl_manifest_loads_items_with_metadata(dataset_dir: Path):
    data = load(dataset_dir / "data.jsonl")
    assert len(data.items) == 8 and data.rows_in == 8 and data.rejects.empty
    first = data.items.iloc[0]
    assert first["item_id"] == "item-0" and first["captions"] == ["a red square",
                                                                  "a picture of a red square"]
    assert Path(first["image_path"]).is_file() and first["label"] == "red"
    assert data.metadata_columns == ["size"]


def test_digest_changes_with_image_bytes_and_captions_but_not_location(tmp_path: Path):
    a = write_dataset(tmp_path / "a")
    b = write_dataset(tmp_path / "b")
    assert load(a).digest == load(b).digest  # same content elsewhere: same fingerprint
    draw(tmp_path / "b" / "images" / "000.png", (1, 2, 3))
    assert load(a).digest != load(b).digest
    c = write_dataset(tmp_path / "c")
    lines = c.read_text().splitlines()
    record = json.loads(lines[0]) | {"captions": ["changed"]}
    c.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    assert load(a).digest != load(c).digest


def test_bad_rows_become_rejects_with_reasons(tmp_path: Path):
    root = tmp_path / "ds"
    manifest = write_dataset(root, n=4)
    (root / "images" / "broken.png").write_bytes(b"not an image at all")
    outside = tmp_path / "secret.png"
    draw(outside, (0, 0, 0))
    os.symlink(outside, root / "images" / "link.png")
    extra = [
        {"id": "escape", "image": "../secret.png", "captions": ["x"]},
        {"id": "abs", "image": str(outside), "captions": ["x"]},
        {"id": "symlink", "image": "images/link.png", "captions": ["x"]},
        {"id": "missing", "image": "images/nope.png", "captions": ["x"]},
        {"id": "broken", "image": "images/broken.png", "captions": ["x"]},
        {"id": "nocap", "image": "images/000.png", "captions": ["", "  "]},
        {"id": "item-0", "image": "images/001.png", "captions": ["dup id"]},
        {"id": "partly", "image": "images/002.png", "captions": ["ok caption", ""]},
    ]
    with manifest.open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in extra))
        handle.write("{this is not json\n")
    data = load(manifest)
    reasons = dict(zip(data.rejects["item_id"] + "/" + data.rejects["scope"],
                       data.rejects["reason"], strict=True))
    assert "escapes the dataset root" in reasons["escape/item"]
    assert "escapes the dataset root" in reasons["abs/item"]
    assert "escapes the dataset root" in reasons["symlink/item"]
    assert reasons["missing/item"] == "image file not found"
    assert reasons["broken/item"].startswith("not a readable image")
    assert reasons["nocap/item"] == "no caption"
    # the same id for another image: rejected, naming the id and both images
    assert reasons["item-0/item"] == (
        "conflicting duplicate id: id 'item-0' is already used for image 'images/000.png' "
        "(row 0); this row names another image, 'images/001.png'")
    assert reasons["partly/caption"] == "1 empty caption(s) dropped"
    assert any(r.startswith("malformed JSON line") for r in data.rejects["reason"])
    # every row in is an item or an item-level reject
    item_rejects = (data.rejects["scope"] == "item").sum()
    assert len(data.items) + item_rejects == data.rows_in == 13
    assert data.items["item_id"].tolist()[-1] == "partly"


def test_csv_with_one_row_per_caption_and_column_mapping(tmp_path: Path):
    root = tmp_path / "ds"
    for index in range(3):
        draw(root / f"{index}.png", (index * 50, 0, 0))
    rows = [{"file": f"{i}.png", "text": f"caption {i} {j}", "cls": str(i)}
            for i in range(3) for j in range(2)]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    data = load(root / "m.csv", columns={"id": None, "image": "file", "captions": "text",
                                         "label": "cls"})
    assert data.items["captions"].tolist()[1] == ["caption 1 0", "caption 1 1"]
    assert data.items["label"].tolist() == ["0", "1", "2"]
    # rows_in counts raw rows; each item says how many of them it holds
    assert data.rows_in == 6 and data.items["source_rows"].tolist() == [2, 2, 2]
    assert data.row_counts() == {"rows_in": 6, "item_rows": 6, "rejected_rows": 0}


def test_csv_caption_separator_limit_and_parquet(tmp_path: Path):
    root = tmp_path / "ds"
    for index in range(4):
        draw(root / f"{index}.png", (0, index * 50, 0))
    frame = pd.DataFrame({"image": [f"{i}.png" for i in range(4)],
                          "captions": ["a|b", "c", "d|e|f", "g"]})
    frame.to_csv(root / "m.csv", index=False)
    data = load(root / "m.csv", caption_separator="|", limit=3)
    assert data.items["captions"].tolist() == [["a", "b"], ["c"], ["d", "e", "f"]]
    frame.assign(captions=frame["captions"].str.split("|")).to_parquet(root / "m.parquet")
    assert load(root / "m.parquet").items["captions"].tolist()[2] == ["d", "e", "f"]


def test_whole_dataset_errors_are_clear(tmp_path: Path):
    with pytest.raises(DataError, match="manifest not found"):
        load(tmp_path / "none.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported manifest type"):
        load(tmp_path / "m.txt")
    (tmp_path / "m.jsonl").write_text('{"img": "a.png", "captions": ["x"]}\n')
    with pytest.raises(DataError, match="column 'image' not found"):
        load(tmp_path / "m.jsonl")


def test_exif_orientation_is_applied(tmp_path: Path):
    from PIL import Image

    from tasks.io import open_image

    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif)
    Image.new("L", (5, 5)).save(tmp_path / "g.png")
    assert open_image(tmp_path / "r.jpg").size == (20, 40)
    assert open_image(tmp_path / "g.png").mode == "RGB"
