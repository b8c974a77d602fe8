"""The reliability summary: bad inputs, file-level errors, crashes, service faults and secrets,
each run by the checks the tests under tests/reliability/ use, in one line at the end:

    N bad inputs in K classes: N recorded (row outcomes as expected + one-line file-level
    errors), 0 lost, 0 crashes, 0 hangs; P kill points: P resumed identically, 0 left running;
    F faults injected: operations survived, 0 lost; S secrets planted, 0 found

Run it from the repository root: ``.venv/bin/python benchmarks/reliability.py [--quick]``
(``--quick`` skips the parts that start Prefect or MLflow servers: crashes, faults, secrets,
and the error cases that reach a flow). It takes about 10 minutes on 2 cores in full.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.settings import apply_defaults  # noqa: E402


def timed(name: str, call: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = call()
    print(f"{name}: {json.dumps(_brief(result), default=str)} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items()
            if not isinstance(v, list | dict) or k in ("mismatches", "failures") and v}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the server-backed checks")
    args = parser.parse_args()
    apply_defaults()
    from tests.reliability.error_corpus import run_error_corpus
    from tests.reliability.input_corpus import run_corpus

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = timed("bad inputs", lambda: run_corpus(root / "inputs"))
        errors = timed("file-level errors", lambda: run_error_corpus(
            root / "errors", include_flow=not args.quick))
        cases = inputs["cases"] + errors["cases"]
        parts = [f"{cases} bad inputs in {inputs['classes'] + errors['classes']} classes: "
                 f"{inputs['recorded'] + errors['clear_errors']} recorded "
                 f"({inputs['recorded']} row outcomes as expected, {errors['clear_errors']} "
                 f"one-line file-level errors), {inputs['lost']} lost, "
                 f"{inputs['crashes'] + errors['tracebacks'] + errors['wrong_exit']} crashes, "
                 f"{inputs['hangs']} hangs"]
        ok = not (inputs["lost"] or inputs["crashes"] or inputs["hangs"]
                  or inputs["recorded"] != inputs["cases"] or errors["tracebacks"]
                  or errors["clear_errors"] != errors["cases"])
        if not args.quick:
            lines, servers_ok = server_checks(root)
            parts, ok = parts + lines, ok and servers_ok
    print("; ".join(parts))
    return 0 if ok else 1


def server_checks(root: Path) -> tuple[list[str], bool]:
    from tests.reliability.crash_check import run_crash_check
    from tests.reliability.fault_check import run_fault_check
    from tests.reliability.secret_check import run_secret_check

    crash = timed("crashes", lambda: run_crash_check(root / "crash"))
    faults = timed("service faults", lambda: run_fault_check(root / "faults"))
    secrets = timed("secrets", lambda: run_secret_check(root / "secrets"))
    ok = (crash["resumed_identical"] == crash["kill_points"] and not crash["left_running"]
          and not crash["stale_folders"] and not faults["lost"] and not secrets["found"])
    return [f"{crash['kill_points']} kill points: {crash['resumed_identical']} resumed "
            f"identically, {crash['left_running']} left running, {crash['stale_folders']} "
            "stale cache folders",
            f"{faults['faults_injected']} faults injected: {faults['survived']} operations "
            f"survived, {faults['lost']} lost",
            f"{secrets['planted']} secrets planted, {secrets['found']} found"], ok


if __name__ == "__main__":
    sys.exit(main())
