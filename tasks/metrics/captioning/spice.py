"""SPICE through the jar pycocoevalcap ships, only when Stanford CoreNLP 3.6.0 is available locally.

pycocoevalcap's ``Spice()`` downloads CoreNLP (~400 MB) on first use; this module never does:
the two jars it needs (``stanford-corenlp-3.6.0.jar`` and ``stanford-corenlp-3.6.0-models.jar``)
must already be in the folder given as option ``corenlp_dir`` or in the environment variable
``BIFOCAL_SPICE_CORENLP_DIR``. Otherwise, or without Java, the metric is skipped with the
reason. When they are there, SPICE runs like pycocoevalcap's ``Spice.compute_score`` (same jar,
``-subset -silent``, tokenised captions, F-score of "All" per image, corpus value = mean over
images) in one JVM, with the CoreNLP jars put on the class path instead of copied into the
installed package, and without SPICE's parse cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.captioning.inputs import CaptionInputs, require_samples
from tasks.metrics.captioning.meteor import find_meteor_jar
from tasks.stats.estimates import mean

CORENLP_ENV = "BIFOCAL_SPICE_CORENLP_DIR"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
SPICE_JAR = "spice-1.0.jar"


def find_spice_jar() -> Path | None:
    meteor = find_meteor_jar()  # both live in the pycocoevalcap package folder
    jar = meteor.parent.parent / "spice" / SPICE_JAR if meteor else None
    return jar if jar is not None and jar.is_file() else None


def missing_requirement(corenlp_dir: str | Path | None) -> str | None:
    """Why SPICE cannot run here, or ``None`` when it can."""
    if corenlp_dir is None:
        return (f"SPICE needs Stanford CoreNLP 3.6.0 ({' and '.join(CORENLP_JARS)}); set option "
                f"corenlp_dir or ${CORENLP_ENV} to a folder holding them (never downloaded here)")
    missing = [name for name in CORENLP_JARS if not (Path(corenlp_dir) / name).is_file()]
    if missing:
        return f"SPICE needs {', '.join(missing)} in {corenlp_dir} (never downloaded here)"
    if shutil.which("java") is None:
        return "SPICE needs Java, but no 'java' executable is on PATH"
    if find_spice_jar() is None:
        return f"SPICE needs {SPICE_JAR} from the pycocoevalcap package, which was not found"
    return None


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def run_spice(
    inputs: CaptionInputs, corenlp_dir: Path, memory: str = "8G", timeout: float | None = None
) -> np.ndarray:
    """Per-sample SPICE F-scores (NaN where SPICE gives none)."""
    tokens = inputs.tokenized()
    jar = find_spice_jar()
    assert jar is not None
    classpath = os.pathsep.join([str(jar), *(str(corenlp_dir / name) for name in CORENLP_JARS)])
    records = [
        {"image_id": sample_id, "test": prediction, "refs": refs}
        for sample_id, prediction, refs in zip(
            inputs.ids, tokens.predictions, tokens.references, strict=True
        )
    ]
    with tempfile.TemporaryDirectory(prefix="bifocal-spice-") as folder:
        in_file, out_file = Path(folder) / "input.json", Path(folder) / "output.json"
        in_file.write_text(json.dumps(records))
        command = ["java", f"-Xmx{memory}", "-cp", classpath, "edu.anu.spice.SpiceScorer",
                   str(in_file), "-out", str(out_file), "-subset", "-silent"]
        done = subprocess.run(command, cwd=jar.parent, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"SPICE failed (exit code {done.returncode}): {detail}")
        results = json.loads(out_file.read_text())
    by_id = {str(item["image_id"]): _float(item["scores"]["All"]["f"]) for item in results}
    return np.array([by_id.get(sample_id, float("nan")) for sample_id in inputs.ids])


@register_metric(
    "spice",
    task="captioning",
    outputs={"spice": True},
    description="SPICE (needs a local Stanford CoreNLP 3.6.0; skipped otherwise)",
)
def spice_score(
    inputs: CaptionInputs, corenlp_dir: str | Path | None = None, memory: str = "8G"
) -> MetricResult:
    """SPICE (needs a local Stanford CoreNLP 3.6.0; skipped otherwise, never downloaded)."""
    require_samples(inputs, "SPICE")
    corenlp_dir = corenlp_dir or os.environ.get(CORENLP_ENV) or None
    reason = missing_requirement(corenlp_dir)
    if reason is not None:
        return MetricResult.skip(reason)
    per_sample = run_spice(inputs, Path(corenlp_dir), memory=memory)  # type: ignore[arg-type]
    return MetricResult(corpus={"spice": float(np.mean(per_sample))},
                        per_sample={"spice": per_sample}, estimates={"spice": mean("spice")})
