"""The demo flow end to end on tiny demo assets (the real demo trains for about two minutes)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_flow_runs_every_task_kind(prefect_harness, tmp_path: Path, monkeypatch):
    from flows.demo import HEADLINES, demo, robustness_lines
    from tasks.demo import DemoConfig
    from tasks.demo.captioner import CaptionerTrainConfig
    from tasks.demo.train import ModelSpec, TrainConfig

    monkeypatch.chdir(tmp_path)  # reports/ and mlflow.db land in the temporary folder
    tiny = DemoConfig(n_train=24, n_test=10, models={"clip-tiny-short": 2, "clip-tiny-long": 4},
                      spec=ModelSpec(vision_layers=1, text_layers=1),
                      train=TrainConfig(batch_size=8),
                      captioner_train=CaptionerTrainConfig(steps=3, batch_size=8))
    results = demo(overrides=["review.size=3", f"work_dir={tmp_path / 'work'}"],
                   root=str(tmp_path / "assets"), demo_config=tiny)
    assert [r["run_name"] for r in results["retrieval"]] == [
        "clip-tiny-long@demo-test", "clip-tiny-short@demo-test"]
    kinds = [kind for kind, _ in results["tasks"]]
    assert kinds == ["zero_shot_classification", "zero_shot_classification", "matching",
                     "captioning", "vqa", "text_to_image", "text_to_image"]
    for kind, result in results["tasks"]:
        assert HEADLINES[kind][0] in result["metrics"], kind
        assert Path(result["report"], "report.json").is_file()
    runs = {result["run_name"].split("@")[1]: result for _, result in results["tasks"]}
    lines = robustness_lines(runs["demo-shapes-robustness"])
    assert len(lines) == 1 + 4 + 2  # header, 4 corruptions, FGSM at 2 epsilons
    assert "FGSM epsilon 4/255" in lines[-1]
    for name in ("clean", "degraded"):  # too few tiny images here for FID to rank them
        assert runs[f"demo-text-to-image-{name}"]["metrics"]["fid"] >= 0
    assert (tmp_path / "mlflow.db").is_file()
    gates = {(g["candidate"], g["baseline"]): g["gate"] for g in results["gates"]}
    assert set(gates) == {("clip-tiny-long", "clip-tiny-short"),
                          ("clip-tiny-short", "clip-tiny-long")}
    for gate in gates.values():  # the decision follows the rules on the measured deltas
        failed = [r for r in gate["rules"] if r["drop"] > r["allowed_drop"]
                  and r["p_holm"] < r["alpha"]]
        assert gate["status"] == ("failed" if failed else "passed")
