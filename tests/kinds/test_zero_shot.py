from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tasks.config_io import build_config
from tasks.data import load_dataset
from tasks.data.base import save_dataset
from tasks.kinds.base import InferenceRef
from tasks.kinds.zero_shot.infer import class_embeddings
from tasks.kinds.zero_shot.score import score
from tests.helpers import write_dataset


class FakeTextEncoder:
    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode_texts(self, texts):
        return np.stack([self.table[t] for t in texts])


def test_class_embedding_is_the_normalised_mean_of_normalised_templates():
    table = {"a red": np.array([3.0, 0.0]), "the red": np.array([0.0, 1.0]),
             "a blue": np.array([-1.0, 0.0]), "the blue": np.array([-2.0, 0.0])}
    out = class_embeddings(FakeTextEncoder(table), ["red", "blue"], ["a {}", "the {}"])
    np.testing.assert_allclose(out, [[np.sqrt(0.5), np.sqrt(0.5)], [-1.0, 0.0]])


def test_score_predicts_nearest_class_and_records_unusable_labels(tmp_path: Path):
    manifest = write_dataset(tmp_path / "ds", n=8)  # labels cycle red, green, blue, yellow
    lines = manifest.read_text().splitlines()
    lines[6] = lines[6].replace('"label": "blue"', '"label": "purple"')
    lines[7] = lines[7].replace(', "label": "yellow"', "")
    manifest.write_text("\n".join(lines) + "\n")
    config = build_config({"task": "zero_shot_classification", "model": {"path": "m"},
                           "dataset": {"path": str(manifest), "columns": {"captions": None}},
                           "zero_shot": {"class_names": ["red", "green", "blue", "yellow"]}})
    dataset = save_dataset(load_dataset(config.dataset), tmp_path / "run")
    rng = np.random.default_rng(0)
    classes = np.eye(4, dtype=np.float32)
    truth = [0, 1, 2, 3, 0, 1, 2, 3]
    guesses = [0, 1, 2, 0, 0, 2, 2, 3]  # two mistakes among the usable rows
    images = classes[guesses] + 0.01 * rng.random((8, 4)).astype(np.float32)
    images[2] = np.nan  # image failed at inference
    shard = tmp_path / "shard"
    shard.mkdir()
    np.save(shard / "image_embeddings.npy", images)
    np.save(tmp_path / "classes.npy", classes)
    inference = InferenceRef("fp", [str(shard)], 0, "model", "code", failures={2: "decode failed"},
                             class_names=["red", "green", "blue", "yellow"],
                             class_embeddings_path=str(tmp_path / "classes.npy"))
    result = score(dataset, inference, config, tmp_path / "scores")
    table = pd.read_parquet(result.per_sample_path)
    assert table["status"].tolist() == ["scored", "scored", "failed", "scored", "scored",
                                        "scored", "failed", "failed"]
    assert "not among the class names" in table["reason"][6]
    assert table["reason"][7] == "no label"
    ok = [0, 1, 3, 4, 5]
    names = ["red", "green", "blue", "yellow"]
    labels, predicted = [names[truth[i]] for i in ok], [names[guesses[i]] for i in ok]
    assert table["prediction"][ok].tolist() == predicted
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result.metrics["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, labels=names, average="macro", zero_division=0))
    matrix = pd.read_csv(result.files["confusion_matrix.csv"], index_col=0)
    assert matrix.loc["yellow", "red"] == 1 and int(matrix.to_numpy().sum()) == 5
