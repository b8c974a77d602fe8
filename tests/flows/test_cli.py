import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tasks.metrics import get_metric
from tasks.metrics.retrieval import RetrievalInputs


def bifocal(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_score_retrieval_prints_one_json_document(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 8)).astype(np.float32)
    owner = np.repeat(np.arange(30), 2)
    texts = images[owner] + rng.normal(size=(60, 8)).astype(np.float32)
    for name, array in (("i", images), ("t", texts), ("x", owner)):
        np.save(tmp_path / f"{name}.npy", array)
    result = bifocal("score", "retrieval", "--image-embeddings", str(tmp_path / "i.npy"),
                     "--text-embeddings", str(tmp_path / "t.npy"),
                     "--text-to-image", str(tmp_path / "x.npy"))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected = get_metric("retrieval")(RetrievalInputs(images, texts, owner)).corpus
    assert document == {"metrics": expected}


def test_score_retrieval_bad_input_is_a_clear_error(tmp_path: Path):
    np.save(tmp_path / "i.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "t.npy", np.zeros((2, 5), np.float32))
    np.save(tmp_path / "x.npy", np.array([0, 1]))
    result = bifocal("score", "retrieval", "--image-embeddings", str(tmp_path / "i.npy"),
                     "--text-embeddings", str(tmp_path / "t.npy"),
                     "--text-to-image", str(tmp_path / "missing.npy"))
    assert result.returncode == 2 and "cannot read --text-to-image" in result.stderr
    result = bifocal("score", "retrieval", "--image-embeddings", str(tmp_path / "i.npy"),
                     "--text-embeddings", str(tmp_path / "t.npy"),
                     "--text-to-image", str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "differ in width" in result.stderr
    assert result.stdout == ""


def test_run_with_invalid_config_names_the_field(tmp_path: Path):
    (tmp_path / "c.yaml").write_text("model: {path: m, batch_size: 0}\ndataset: {path: d.jsonl}\n")
    result = bifocal("run", str(tmp_path / "c.yaml"), "--set", "review.size=-1")
    assert result.returncode == 2
    assert "model.batch_size: Input should be greater than or equal to 1" in result.stderr
    assert "review.size" in result.stderr


def test_temporary_prefect_server_that_does_not_start_is_one_line(tmp_path: Path, tiny_clip_dir):
    """Prefect's own timeout (0 s here: it gives up before the first health check) ends in one
    line and exit 1, not a traceback through Prefect's flow engine."""
    import os

    from tests.helpers import write_dataset

    manifest = write_dataset(tmp_path / "data", n=4)
    config = tmp_path / "c.yaml"
    config.write_text(f"task: retrieval\nmodel: {{kind: dual_encoder, path: {tiny_clip_dir}}}\n"
                      f"dataset: {{path: {manifest}}}\n")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env |= {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "bifocal: error: the temporary Prefect server did not start within 0 s" in result.stderr
