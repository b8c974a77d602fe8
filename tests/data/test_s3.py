import json
import threading
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import tasks.data.s3 as s3_source
from tasks.config import DatasetConfig
from tasks.data import DataError, load_dataset
from tests.helpers import draw, write_dataset


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path: Path):
    """Credentials and endpoint in the environment, a fresh cache, and a request counter."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BIFOCAL_HOME", str(tmp_path / "home"))
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    real = s3_source.s3_client

    def count(model, **_) -> None:
        with lock:  # images are fetched from several threads
            calls[model.name] += 1

    def counting_client():
        client = real()
        client.meta.events.register("before-call.s3.*", count)
        return client

    monkeypatch.setattr(s3_source, "s3_client", counting_client)
    return calls


def new_bucket(s3_server) -> str:
    name = f"data-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def upload_folder(s3_server, folder: Path, bucket: str, prefix: str) -> None:
    client = s3_server.client()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(file), bucket, f"{prefix}/{file.relative_to(folder).as_posix()}")


def s3_config(uri: str, **kwargs) -> DatasetConfig:
    return DatasetConfig(source="s3", path=uri, **kwargs)


def test_s3_manifest_rejects_and_cache_reuse(s3_server, s3_env, tmp_path: Path):
    local = write_dataset(tmp_path / "ds", n=4)
    extra = [{"id": "missing", "image": "images/nope.png", "captions": ["x"]},
             {"id": "escape", "image": "../other/000.png", "captions": ["x"]}]
    with local.open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in extra) + "{corrupt json\n")
    bucket = new_bucket(s3_server)
    upload_folder(s3_server, tmp_path / "ds", bucket, "bench/v1")
    upload_folder(s3_server, tmp_path / "ds" / "images", bucket, "bench/other")
    uri = f"s3://{bucket}/bench/v1/data.jsonl"

    first = load_dataset(s3_config(uri))
    assert first.items["item_id"].tolist() == [f"item-{i}" for i in range(4)]
    assert first.source_uri == uri and first.rows_in == 7
    reasons = dict(zip(first.rejects["item_id"], first.rejects["reason"], strict=True))
    assert reasons["missing"] == "image object not found"
    assert "escapes the dataset root" in reasons["escape"]
    assert any(r.startswith("malformed JSON line") for r in reasons.values())
    assert s3_env["GetObject"] == 1 + 4  # manifest + images; the escaping key is never fetched
    # same content as the local copy: same digest (it is location-independent)
    assert first.digest == load_dataset(DatasetConfig(path=str(local))).digest

    s3_env.clear()
    second = load_dataset(s3_config(uri))
    assert s3_env["GetObject"] == 0 and s3_env["HeadObject"] == 1 + 5  # verified, not fetched
    assert second.digest == first.digest and second.root == first.root

    old_path = Path(first.items["image_path"][0])
    old_bytes = old_path.read_bytes()
    draw(tmp_path / "changed.png", (1, 2, 3))
    s3_server.client().upload_file(str(tmp_path / "changed.png"), bucket,
                                   "bench/v1/images/000.png")
    s3_env.clear()
    third = load_dataset(s3_config(uri))
    assert s3_env["GetObject"] == 1  # only the changed object
    assert third.digest != first.digest and third.root != first.root
    assert Path(third.items["image_path"][0]).read_bytes() != old_bytes
    assert old_path.read_bytes() == old_bytes  # an earlier load's files never change


def test_s3_root_prefix_csv_manifest_and_limit(s3_server, s3_env, tmp_path: Path):
    for index in range(4):
        draw(tmp_path / "imgs" / f"{index}.png", (index * 60, 0, 0))
    rows = [{"image": f"{i}.png", "captions": f"caption {i} {j}"}
            for i in range(4) for j in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    manifests, images = new_bucket(s3_server), new_bucket(s3_server)
    s3_server.client().upload_file(str(tmp_path / "m.csv"), manifests, "lists/m.csv")
    upload_folder(s3_server, tmp_path / "imgs", images, "pool")

    data = load_dataset(s3_config(f"s3://{manifests}/lists/m.csv", root=f"s3://{images}/pool/",
                                  limit=2, columns={"id": None}))
    assert data.items["captions"].tolist() == [["caption 0 0", "caption 0 1"],
                                               ["caption 1 0", "caption 1 1"]]
    assert s3_env["GetObject"] == 1 + 2  # images past the limit are not fetched


def test_s3_whole_dataset_errors(s3_server, s3_env, monkeypatch):
    bucket = new_bucket(s3_server)
    with pytest.raises(DataError, match=f"manifest object not found: s3://{bucket}/no/m.jsonl"):
        load_dataset(s3_config(f"s3://{bucket}/no/m.jsonl"))
    with pytest.raises(DataError, match="must be an s3://bucket/key URI"):
        load_dataset(s3_config("/local/m.jsonl"))

    s3_server.client().put_object(Bucket=bucket, Key="m.jsonl", Body=b"{}\n")
    secret = "wrong-secret-do-not-print"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(DataError, match=f"access to s3://{bucket}/m.jsonl was denied") as error:
        load_dataset(s3_config(f"s3://{bucket}/m.jsonl"))
    assert "signature mismatch" in str(error.value)
    assert secret not in str(error.value) and s3_server.secret_key not in str(error.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknown-key")
    with pytest.raises(DataError, match="was denied"):
        load_dataset(s3_config(f"s3://{bucket}/m.jsonl"))


@pytest.mark.parametrize(("relative", "key"), [
    ("images/a.png", "p/images/a.png"),
    ("./images/../b.png", "p/b.png"),
    ("../a.png", None),
    ("images/../../a.png", None),
    ("/etc/passwd", None),
    ("", None),
    (3, None),
])
def test_image_key_refuses_paths_that_escape_the_prefix(relative, key):
    assert s3_source.image_key("p", relative) == key
