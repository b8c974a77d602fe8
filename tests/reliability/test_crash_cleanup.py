"""What a killed process leaves behind: stale staging folders, RUNNING runs of dead owners —
the plain functions, without subprocess runs of the flow (those are in test_crash.py)."""

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.kinds.cache import FolderCache, staging_prefix, stale_staging
from tasks.maintenance import cleanup
from tasks.processes import host_name, pid_namespace, process_alive, process_started
from tasks.tracking import mlflow_log as ml
from tasks.tracking.cleanup import death_reason, heartbeat, owner_tags
from tests.reliability.crash_check import dead_pid

KEY = "ab" * 32


def staging(root: Path, name: str, age_s: float = 0) -> Path:
    folder = root / KEY[:2] / name
    folder.mkdir(parents=True)
    (folder / "image_embeddings.npy").write_bytes(b"half")
    if age_s:
        then = time.time() - age_s
        for path in (folder / "image_embeddings.npy", folder):
            os.utime(path, (then, then))
    return folder


def named(pid: int, host: str | None = None, rest: str = "x1y2z3") -> str:
    prefix = staging_prefix(KEY).replace(f"-{os.getpid()}@", f"-{pid}@", 1)
    if host is not None:
        prefix = prefix.replace(f"@{host_name()}~", f"@{host}~", 1)
    return prefix + rest


def test_put_names_its_staging_folder_after_the_writer(tmp_path: Path):
    seen = []
    FolderCache(tmp_path).put(KEY, lambda folder: seen.append(folder.name))
    assert seen[0].startswith(f".{KEY[:12]}-{os.getpid()}@{host_name()}~{pid_namespace()}-")
    assert not stale_staging(tmp_path)


def test_folder_cache_removes_staging_of_dead_writers_when_it_starts(tmp_path: Path):
    root = tmp_path / "cache"
    entry = FolderCache(root).put(KEY, lambda folder: (folder / "a.npy").write_bytes(b"1"))
    dead = staging(root, named(dead_pid()))
    live = staging(root, named(os.getppid()))  # the parent of this test process is alive
    own = staging(root, named(os.getpid()))  # this process may be writing it right now
    elsewhere_fresh = staging(root, named(dead_pid(), host="other-host"))
    elsewhere_old = staging(root, named(dead_pid(), host="other-host", rest="old1"),
                            age_s=2 * 86400)
    legacy_fresh = staging(root, f".{KEY[:12]}-k3j_x9a1")
    legacy_old = staging(root, f".{KEY[:12]}-p0q9r8", age_s=2 * 86400)

    assert sorted(stale_staging(root)) == sorted([dead, elsewhere_old, legacy_old])
    FolderCache(root)
    left = {p for p in (root / KEY[:2]).iterdir()}
    assert left == {live, own, elsewhere_fresh, legacy_fresh, entry}
    assert (entry / "a.npy").read_bytes() == b"1"
    FolderCache(root, stale_after_s=0)  # another machine's or unknown writers: by age only
    assert {p for p in (root / KEY[:2]).iterdir()} == {live, own, entry}


def test_process_alive_tells_a_reused_pid_from_its_owner():
    me = os.getpid()
    assert process_alive(me) and process_alive(me, process_started(me))
    assert not process_alive(me, "1")  # same pid, another start time: not the owner
    assert not process_alive(dead_pid())


def test_death_reason_by_pid_here_and_by_heartbeat_elsewhere():
    now = time.time()
    mine = owner_tags()
    assert death_reason(mine, None, now=now) is None
    pid = dead_pid()
    gone = mine | {"bifocal.pid": str(pid), "bifocal.pid_started": ""}
    assert death_reason(gone, None, now=now) == (
        f"killed: process {pid}@{host_name()} ended without closing the run")
    reused = mine | {"bifocal.pid_started": "1"}
    assert death_reason(reused, None, now=now) is not None

    def beat(age: float) -> str:
        return datetime.fromtimestamp(now - age, UTC).isoformat()

    elsewhere = mine | {"bifocal.host": "other-host", "bifocal.pid": "7"}
    assert death_reason(elsewhere | {"bifocal.heartbeat": beat(60)}, None, now=now) is None
    text = death_reason(elsewhere | {"bifocal.heartbeat": beat(1000)}, None, now=now)
    assert text is not None and text.startswith("killed: process 7@other-host (another machine) "
                                                "sent no heartbeat for 1000 s (limit 900 s)")
    assert death_reason(elsewhere | {"bifocal.heartbeat": beat(100)}, None, now=now,
                        older_than=50) is not None
    other_namespace = mine | {"bifocal.pid": str(pid), "bifocal.pid_namespace": "1"}
    assert death_reason(other_namespace, None, now=now) is None  # not checkable by pid here
    old_ms = int((now - 3600) * 1000)
    assert death_reason({}, old_ms, now=now) is None  # no owner: only with an explicit limit
    assert death_reason({}, old_ms, now=now, older_than=600) is not None
    assert death_reason({}, old_ms, now=now, older_than=7200) is None


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_cleanup_ends_only_dead_runs_and_lists_them_in_a_dry_run(store: str, tmp_path: Path,
                                                                 capsys):
    from mlflow import MlflowClient

    from flows.cli import main

    pid = dead_pid()
    dead = ml.start_run(store, "exp", "dead", owner_tags() | {"bifocal.pid": str(pid),
                                                              "bifocal.pid_started": ""})
    alive = ml.start_run(store, "exp", "alive", owner_tags())
    untagged = ml.start_run(store, "other", "suite parent", {})
    finished = ml.start_run(store, "exp", "done", owner_tags() | {"bifocal.pid": str(pid)})
    ml.end_run(store, finished, "FINISHED")
    work = tmp_path / "work"
    leftover = staging(work / "cache" / "inference", named(pid))

    assert main(["runs", "cleanup", "--tracking-uri", store, "--dry-run", "--json",
                 "--work-dir", str(work)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [run["run_id"] for run in document["runs"]] == [dead]
    assert document["staging_folders"] == [str(leftover)] and leftover.exists()
    client = MlflowClient(tracking_uri=store)
    assert client.get_run(dead).info.status == "RUNNING"

    report = cleanup(store, experiments=["exp"], work_dirs=[work])
    assert [run.run_id for run in report.runs] == [dead] and report.runs[0].ended
    assert not leftover.exists()
    run = client.get_run(dead)
    assert run.info.status == "KILLED" and run.info.end_time
    assert run.data.tags["bifocal.error"] == (
        f"killed: process {pid}@{host_name()} ended without closing the run")
    assert {client.get_run(r).info.status for r in (alive, untagged)} == {"RUNNING"}
    assert client.get_run(finished).info.status == "FINISHED"
    assert "ended KILLED" in "\n".join(report.lines())

    # an explicit age limit also ends runs that recorded no owner
    report = cleanup(store, older_than=0, prefect=False)
    assert [run.run_id for run in report.runs] == [untagged]
    assert client.get_run(untagged).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING"
    ml.end_run(store, alive, "FINISHED")


def test_heartbeat_refreshes_the_tag_while_the_run_lives(store: str, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("BIFOCAL_HEARTBEAT_SECONDS", "1")
    run_id = ml.start_run(store, "exp", "beating", owner_tags())
    client = MlflowClient(tracking_uri=store)
    first = client.get_run(run_id).data.tags["bifocal.heartbeat"]
    with heartbeat(store, run_id):
        time.sleep(1.6)
    assert client.get_run(run_id).data.tags["bifocal.heartbeat"] > first
    ml.end_run(store, run_id, "FINISHED")
