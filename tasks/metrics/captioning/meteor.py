"""METEOR 1.5 through the jar pycocoevalcap ships, driven like pycocoevalcap's ``Meteor``.

One JVM per scoring call (``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``, run in
the jar's folder so it finds its paraphrase table). For every sample a ``SCORE ||| ref 1 |||
... ||| prediction`` line yields the sufficient statistics, then one ``EVAL ||| stats 1 ||| ...``
line yields the per-sample scores and the corpus score (METEOR's own aggregate, not the mean of
the sample scores). Inputs are the PTB-tokenised captions, as in ``COCOEvalCap``; the
prediction is cleaned the way pycocoevalcap does (``|||`` removed, double spaces collapsed).
Unlike pycocoevalcap, which waits for each answer before sending the next line, all ``SCORE``
lines are streamed from a second thread, which gives the same numbers much faster.

The per-sample statistics are kept as the columns ``meteor.stat.0`` .. ``meteor.stat.23``: the
jar's 23 numbers per sample plus a perfect-match flag
(``tasks.stats.corpus.meteor_sufficient_statistics``), so the corpus score is recomputed from
their column sums (``tasks.stats.corpus.meteor_statistic``) for bootstrap intervals.

Without Java on PATH or without the jar the metric is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tasks.metrics.base import MetricResult, register_metric
from tasks.metrics.captioning.inputs import CaptionInputs, require_samples
from tasks.stats.corpus import METEOR_JAR_STATS, meteor_sufficient_statistics
from tasks.stats.estimates import Estimate

METEOR_JAR = "meteor-1.5.jar"
STAT_COLUMNS = tuple(f"meteor.stat.{j}" for j in range(METEOR_JAR_STATS + 1))


def find_meteor_jar() -> Path | None:
    """``meteor-1.5.jar`` inside the installed pycocoevalcap package, if any."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        jar = Path(folder) / "meteor" / METEOR_JAR
        if jar.is_file():
            return jar
    return None


def score_line(prediction: str, references: list[str]) -> str:
    """pycocoevalcap's ``Meteor._stat`` request (only the prediction is cleaned)."""
    prediction = prediction.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), prediction))


def parse_stats(lines: list[str]) -> np.ndarray:
    """The jar's answers to ``SCORE`` lines as float64 ``(n, 23)``."""
    rows = [line.split() for line in lines]
    for line, row in zip(lines, rows, strict=True):
        if len(row) != METEOR_JAR_STATS:
            raise RuntimeError(f"METEOR answered {line!r}, not {METEOR_JAR_STATS} statistics")
    return np.array(rows, dtype=np.float64).reshape(len(rows), METEOR_JAR_STATS)


def _write_lines(stream, lines: Iterable[str], errors: list[BaseException]) -> None:
    try:
        for line in lines:
            stream.write(f"{line}\n".encode())
        stream.flush()
    except BaseException as error:  # surfaced by the reading side
        errors.append(error)


class MeteorProcess:
    """One METEOR JVM in ``-stdio`` mode; use as a context manager."""

    def __init__(self, jar: Path, java: str = "java", memory: str = "2G") -> None:
        # Kept open for the life of the process; closed in ``close``.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.last_statistics: list[str] | None = None  # the latest ``score`` call's SCORE answers
        self._process = subprocess.Popen(
            [java, "-jar", f"-Xmx{memory}", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        process = self._process
        if process.stdin and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._stderr.close()

    def _read_line(self) -> str:
        line = self._process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"METEOR stopped answering (exit code {self._process.poll()}): "
                               f"{detail or 'no error output'}")
        return line.decode().strip()

    def statistics(self, predictions: list[str], references: list[list[str]]) -> list[str]:
        """The jar's answer to each sample's ``SCORE`` line (its sufficient statistics)."""
        stdin = self._process.stdin
        errors: list[BaseException] = []
        lines = (score_line(p, r) for p, r in zip(predictions, references, strict=True))
        writer = threading.Thread(target=_write_lines, args=(stdin, lines, errors), daemon=True)
        writer.start()
        stats = [self._read_line() for _ in predictions]
        writer.join()
        if errors:
            raise RuntimeError(f"could not send captions to METEOR: {errors[0]}") from errors[0]
        return stats

    def evaluate(self, stats: list[str]) -> tuple[float, np.ndarray]:
        """(corpus METEOR, per-sample METEOR): the jar's answers to ``EVAL ||| stats ...``."""
        stdin = self._process.stdin
        stdin.write(("EVAL" + "".join(f" ||| {s}" for s in stats) + "\n").encode())  # type: ignore[union-attr]
        stdin.flush()  # type: ignore[union-attr]
        per_sample = np.array([float(self._read_line()) for _ in stats], dtype=np.float64)
        return float(self._read_line()), per_sample

    def score(
        self, predictions: list[str], references: list[list[str]]
    ) -> tuple[float, np.ndarray]:
        """(corpus METEOR, per-sample METEOR) for tokenised captions; the samples' statistics
        are kept in ``last_statistics``."""
        self.last_statistics = self.statistics(predictions, references)
        return self.evaluate(self.last_statistics)


@register_metric(
    "meteor",
    task="captioning",
    outputs={"meteor": True},
    description="METEOR 1.5 (pycocoevalcap's jar, one JVM per call)",
)
def meteor_score(
    inputs: CaptionInputs, jar: str | Path | None = None, memory: str = "2G"
) -> MetricResult:
    """METEOR 1.5 (pycocoevalcap's jar, one JVM per call); skipped without Java or the jar."""
    require_samples(inputs, "METEOR")
    java = shutil.which("java")
    if java is None:
        return MetricResult.skip("METEOR needs Java, but no 'java' executable is on PATH")
    jar_path = Path(jar) if jar is not None else find_meteor_jar()
    if jar_path is None or not jar_path.is_file():
        where = str(jar_path) if jar_path else "the pycocoevalcap package (is it installed?)"
        return MetricResult.skip(f"METEOR needs {METEOR_JAR}, not found in {where}")
    tokens = inputs.tokenized()
    with MeteorProcess(jar_path, java=java, memory=memory) as process:
        corpus, per_sample = process.score(tokens.predictions, tokens.references)
        lines = getattr(process, "last_statistics", None)
    if lines is None:  # a stand-in process (tests) that keeps no statistics
        return MetricResult(corpus={"meteor": corpus}, per_sample={"meteor": per_sample})
    stats = meteor_sufficient_statistics(parse_stats(lines))
    return MetricResult(
        corpus={"meteor": corpus},
        per_sample={"meteor": per_sample}
        | {column: stats[:, j] for j, column in enumerate(STAT_COLUMNS)},
        # corpus METEOR is a function of the summed statistics, not a mean of sample scores
        estimates={"meteor": Estimate("meteor", STAT_COLUMNS)},
    )
