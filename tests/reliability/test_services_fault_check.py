"""The lead's summary numbers for "services failing" (``fault_check.run_fault_check``)."""

from pathlib import Path

from tests.reliability.fault_check import run_fault_check


def test_fault_check_loses_nothing(s3_server, tmp_path: Path):
    result = run_fault_check(tmp_path, s3_server=s3_server)
    # 8 files + marker, 12 dataset items; 5 params + 10 metrics + 1 tag + artifact + status
    assert result == {"faults_injected": result["faults_injected"], "survived": 9 + 12 + 18,
                      "lost": 0}
    assert result["faults_injected"] >= 10
