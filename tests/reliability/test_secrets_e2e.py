"""Planted secrets end to end: two ``bifocal run`` evaluations against a real MLflow server
behind a gateway that demands the planted password; then every store is searched for the
planted values (see tests/reliability/secret_check.py)."""

from __future__ import annotations

import pytest

from tests.reliability.secret_check import run_secret_check

pytestmark = pytest.mark.e2e


def test_no_planted_secret_reaches_any_store(prefect_harness, tiny_clip_dir, tmp_path):
    outcome = run_secret_check(tmp_path, own_harness=False, model_dir=tiny_clip_dir)

    assert outcome["found"] == 0, outcome["locations"]
    assert outcome["planted"] == 2
    # MLflow still authenticated: every request carried the credentials, none was refused,
    # and a request without them is refused
    assert outcome["exit_codes"] == [0, 0]
    assert outcome["authenticated_requests"] > 10
    assert outcome["rejected_requests"] == []
    assert outcome["unauthenticated_probe_status"] == 401
    runs = outcome["runs"]
    assert [run["run_name"] for run in runs] == ["planted-1", "planted-2"]
    for run in runs:
        assert run["status"] == "FINISHED" and run["report_json"]
        assert run["params"] > 30 and run["metrics"] > 10
        assert run["clip_score_model_param"] == "${env:BIFOCAL_SECRET_CLIP_SCORE_MODEL}"
        assert run["max_new_tokens"] == 32  # not over-masked (in the run's config.yaml)
    assert runs[0]["tracking_uri_param"].startswith("http://127.0.0.1:")
    # the searched stores are the ones the runs wrote to (the second run's name is in each)
    controls = outcome["controls"]
    for store in ("mlflow database + server log", "mlflow artifacts", "reports",
                  "prefect database", "stdout"):
        assert controls[store], store
    assert "MLflow run: " in outcome["printed"]
