"""A real Label Studio server on loopback for tests, and a small HTTP client of its API.

Label Studio (1.23.2) lives in its own virtual environment, ``.cache/label-studio/venv``, made by
``scripts/setup-label-studio.sh`` (its pins clash with the project's). :func:`label_studio_server`
starts ``label-studio start`` on a free loopback port with a temporary data directory (SQLite),
local-files serving under a document root, no version check, no Sentry, no analytics, and an
admin user from ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD``. A missing venv or a server
that does not come up skips the test, except under CI (``CI=true``), where it fails.

Authentication (1.23 refuses legacy ``Token`` auth for new organizations): each client logs in
through the login form (a session), creates its **personal access token** (``POST /api/token/``,
a JWT refresh token that does not expire), and from then on calls the API with
``Authorization: Bearer <access>``, where the access token comes from ``POST /api/token/refresh/``
and lasts 5 minutes; a 401 refreshes it once. A user has one personal access token at a time, so
a login revokes the user's previous one. More annotators sign up through the signup form (open
signup is Label Studio's default), so every annotation is made by its own real user. (The other
way that works: ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true`` when the organization is created,
i.e. at the first start, plus ``LABEL_STUDIO_USER_TOKEN`` and ``Authorization: Token ...``.)

A fresh data directory needs Label Studio's migrations, which take most of a first start (~45 s
on an idle 2-core machine, minutes on a loaded one; a migrated one answers ``/health`` in ~6 s).
So the first server migrates a user-less database once (``label-studio version`` migrates and
exits), keeps it under ``.cache/label-studio/template-<version>``, and every server starts from a
copy of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from tasks.config import RatingField
from tasks.review.label_studio import (
    label_studio_result,
    label_studio_tasks,
    labeling_config,
    local_files_url,
)
from tasks.review.queue import TEXT_ROLES
from tests.services import free_port, stop_process_group, unavailable

VERSION = "1.23.2"
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "label-studio"
# scripts/setup-label-studio.sh installs here (BIFOCAL_LABEL_STUDIO_VENV moves it)
VENV = Path(os.environ.get("BIFOCAL_LABEL_STUDIO_VENV") or CACHE / "venv")
TEMPLATE = CACHE / f"template-{VERSION}"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@bifocal.test", "bifocal-admin-password"
START_TIMEOUT_S = 360  # a first start migrates: ~2.5 min on a loaded 2-core machine
HTTP_TIMEOUT_S = 60
REVIEWERS = ("reviewer-1@bifocal.test", "reviewer-2@bifocal.test")


class LabelStudioError(RuntimeError):
    """An API call answered with an error status; the message has the status and the body."""


# --- the client --------------------------------------------------------------------------------


@dataclass
class LabelStudioClient:
    """One user's view of the API, authenticated with a personal access token (JWT)."""

    url: str
    email: str
    refresh_token: str
    http: requests.Session = field(default_factory=requests.Session)
    user_id: int = 0

    @classmethod
    def login(cls, url: str, email: str, password: str) -> LabelStudioClient:
        """Log in through the login form, create a personal access token, and use it."""
        return cls._from_form(url, "/user/login/", email, password)

    @classmethod
    def signup(cls, url: str, email: str, password: str) -> LabelStudioClient:
        """Sign a new user up through the signup form (it joins the organization) and log in."""
        return cls._from_form(url, "/user/signup/", email, password)

    @classmethod
    def _from_form(cls, url: str, page: str, email: str, password: str) -> LabelStudioClient:
        browser = requests.Session()
        browser.get(url + page, timeout=HTTP_TIMEOUT_S).raise_for_status()
        form = {"email": email, "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        answer = browser.post(url + page, data=form, allow_redirects=False,
                              headers={"Referer": url + page}, timeout=HTTP_TIMEOUT_S)
        if answer.status_code != 302:
            raise LabelStudioError(f"{page} for {email} answered {answer.status_code}")
        client = cls(url, email, _personal_access_token(browser, url))
        client.user_id = int(client.call("GET", "/api/current-user/whoami")["id"])
        return client

    def _refresh_access(self) -> None:
        answer = requests.post(self.url + "/api/token/refresh/", timeout=HTTP_TIMEOUT_S,
                               json={"refresh": self.refresh_token})
        self.http.headers["Authorization"] = "Bearer " + _json(answer)["access"]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An authenticated request; a 401 (expired access token) refreshes it and retries once."""
        if "Authorization" not in self.http.headers:
            self._refresh_access()
        answer = self.http.request(method, self.url + path, timeout=HTTP_TIMEOUT_S, **kwargs)
        if answer.status_code == 401:
            self._refresh_access()
            answer = self.http.request(method, self.url + path, timeout=HTTP_TIMEOUT_S, **kwargs)
        return answer

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated request whose JSON answer is returned (an error status raises)."""
        return _json(self.request(method, path, **kwargs))

    # projects, storage, tasks

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        """A new project; Label Studio validates ``label_config`` (a 400 raises)."""
        return dict(self.call("POST", "/api/projects/",
                              json={"title": title, "label_config": label_config}))

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/projects/{project_id}/"))

    def add_local_storage(self, project_id: int, path: Path) -> dict[str, Any]:
        """Connect a local-files storage (``path`` under the document root) to the project: it
        is what entitles the project's users to ``/data/local-files/`` URLs below ``path``."""
        body = {"project": project_id, "path": str(path), "title": "images",
                "use_blob_urls": True}
        return dict(self.call("POST", "/api/storages/localfiles/", json=body))

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Import tasks (with their predictions); returns the import summary (task_count, ...)."""
        return dict(self.call("POST", f"/api/projects/{project_id}/import", json=tasks))

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project, in id order."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.call("GET", "/api/tasks/", params={"project": project_id,
                                                             "page": page, "page_size": 100})
            found += answer["tasks"]
            if len(found) >= answer["total"] or not answer["tasks"]:
                return sorted(found, key=lambda task: task["id"])
            page += 1

    def annotate(self, task_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Submit an annotation of the task as this client's user."""
        return dict(self.call("POST", f"/api/tasks/{task_id}/annotations/",
                              json={"result": result, "was_cancelled": False}))

    def skip(self, task_id: int) -> dict[str, Any]:
        """Skip the task (a cancelled annotation) as this client's user."""
        return dict(self.call("POST", f"/api/tasks/{task_id}/annotations/",
                              json={"result": [], "was_cancelled": True}))

    def export(self, project_id: int, destination: Path, emails: bool = True) -> Path:
        """Write the project's JSON export (the tasks that have annotations) to ``destination``.

        ``emails``: a snapshot export (``POST /api/projects/{id}/exports/``, what the UI's Export
        makes) with each annotation's ``completed_by`` expanded to ``{id, email, ...}``;
        otherwise the direct ``GET /api/projects/{id}/export?exportType=JSON``, whose
        ``completed_by`` is the user id only.
        """
        if emails:
            path = f"/api/projects/{project_id}/exports/{self._snapshot(project_id)}/download"
        else:
            path = f"/api/projects/{project_id}/export"
        answer = self.request("GET", path, params={"exportType": "JSON"})
        _check(answer)
        destination.write_bytes(answer.content)
        return destination

    def _snapshot(self, project_id: int, timeout: float = 120) -> int:
        """A finished export snapshot of the project with annotators' emails; its id."""
        options = {"annotations__completed_by": {"only_id": False}}
        snapshot = self.call("POST", f"/api/projects/{project_id}/exports/",
                             json={"title": "bifocal", "serialization_options": options})
        deadline = time.monotonic() + timeout
        while snapshot["status"] != "completed":
            if snapshot["status"] == "failed" or time.monotonic() > deadline:
                raise LabelStudioError(f"export snapshot {snapshot['id']}: {snapshot['status']}")
            time.sleep(0.5)
            snapshot = self.call("GET", f"/api/projects/{project_id}/exports/{snapshot['id']}")
        return int(snapshot["id"])


def _personal_access_token(browser: requests.Session, url: str) -> str:
    """A new personal access token of the logged-in user. A user has at most one, so the ones
    it has are revoked first (as the UI's "revoke"): clients made before stop working."""
    headers = {"X-CSRFToken": str(browser.cookies["csrftoken"]), "Referer": url + "/"}
    for old in _json(browser.get(url + "/api/token/", timeout=HTTP_TIMEOUT_S)):
        _check(browser.post(url + "/api/token/blacklist/", json={"refresh": old["token"]},
                            headers=headers, timeout=HTTP_TIMEOUT_S))
    created = browser.post(url + "/api/token/", headers=headers, timeout=HTTP_TIMEOUT_S)
    return str(_json(created)["token"])


def _check(answer: requests.Response) -> None:
    if answer.status_code >= 400:
        raise LabelStudioError(f"{answer.request.method} {answer.url} answered "
                               f"{answer.status_code}: {answer.text[:2000]}")


def _json(answer: requests.Response) -> Any:
    _check(answer)
    return answer.json()


# --- the server --------------------------------------------------------------------------------


@dataclass
class LabelStudioServer:
    """A running server: its URL, its local-files document root and the admin's client."""

    url: str
    document_root: Path
    admin: LabelStudioClient
    users: dict[str, LabelStudioClient] = field(default_factory=dict)

    def user(self, email: str, password: str = "bifocal-reviewer-password"
             ) -> LabelStudioClient:
        """The client of a real user of the organization, signed up (signup form) on first use
        and kept: later calls with the same email return the same client."""
        if email == self.admin.email:
            return self.admin
        if email not in self.users:
            self.users[email] = LabelStudioClient.signup(self.url, email, password)
        return self.users[email]


def label_studio_binary() -> Path:
    return VENV / "bin" / "label-studio"


def server_env(data_dir: Path, document_root: Path, port: int) -> dict[str, str]:
    """The environment of ``label-studio start``: offline, SQLite, local files, an admin."""
    settings = {
        "BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LATEST_VERSION_CHECK": "false",  # no question to PyPI at start
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
        "USERNAME": ADMIN_EMAIL, "PASSWORD": ADMIN_PASSWORD,
        "HOST": f"http://127.0.0.1:{port}",  # the URL it puts in links and exports
    }
    return {**os.environ, "DJANGO_DB": "sqlite",
            **{f"LABEL_STUDIO_{key}": value for key, value in settings.items()}}


@contextmanager
def label_studio_server(root: Path) -> Iterator[LabelStudioServer]:
    """A Label Studio server with its data and document root under ``root``; stopped after."""
    binary = label_studio_binary()
    if not binary.exists():
        unavailable(f"Label Studio is not installed in {VENV}: run scripts/setup-label-studio.sh")
    data_dir, document_root = root / "label-studio-data", root / "documents"
    document_root.mkdir(parents=True, exist_ok=True)
    _copy_template(binary, data_dir, root / "label-studio-migrate.log")
    port = free_port()
    log_path = root / "label-studio.log"
    with log_path.open("wb") as log:
        process = _start(binary, port, data_dir, document_root, log)
        try:
            yield _connect(process, port, document_root, log_path)
        finally:
            stop_process_group(process, timeout=30)


def _start(binary: Path, port: int, data_dir: Path, document_root: Path,
           log: Any) -> subprocess.Popen:
    """``label-studio start`` bound to loopback (``--internal-host``; ``--host`` is only the
    URL it advertises) in a process group of its own."""
    command = [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(port)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir,
                            env=server_env(data_dir, document_root, port),
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _connect(process: subprocess.Popen, port: int, document_root: Path,
             log_path: Path) -> LabelStudioServer:
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, START_TIMEOUT_S)
        admin = LabelStudioClient.login(url, ADMIN_EMAIL, ADMIN_PASSWORD)
    except (RuntimeError, requests.RequestException) as error:
        _unavailable("Label Studio did not start", error, log_path)
    return LabelStudioServer(url, document_root, admin)


def _unavailable(what: str, error: Exception, log_path: Path) -> None:
    tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
    unavailable(f"{what}: {error}\n{tail}")


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> float:
    """Wait for ``/health`` to answer 200; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited with code {process.returncode}")
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}/health not healthy after {timeout:.0f} s")


# --- the migrated database, kept for later servers ---------------------------------------------

TEMPLATE_FILES = ("label_studio.sqlite3", ".env")  # the database and its SECRET_KEY


def _copy_template(binary: Path, data_dir: Path, log_path: Path) -> None:
    """Give ``data_dir`` a migrated database without users: the kept one, made first if need be
    (``label-studio version`` migrates a fresh data directory and exits)."""
    if not all((TEMPLATE / name).exists() for name in TEMPLATE_FILES):
        _make_template(binary, log_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        shutil.copy2(TEMPLATE / name, data_dir / name)


def _make_template(binary: Path, log_path: Path) -> None:
    staging = CACHE / f".template-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    env = server_env(staging, staging, 0)
    for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD"):
        env.pop(key)
    try:
        with log_path.open("wb") as log:
            subprocess.run([str(binary), "version"], stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, cwd=staging, env=env, check=True,
                           timeout=START_TIMEOUT_S)
        staging.rename(TEMPLATE)
    except (OSError, subprocess.SubprocessError) as error:
        if not TEMPLATE.exists():  # else another process made it first
            _unavailable("Label Studio could not migrate its database", error, log_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- a scripted review round trip --------------------------------------------------------------

SKIP = "skip"
# (queue row as a dict, reviewer index) -> {field: answer}, SKIP (a cancelled annotation) or
# None (this reviewer does not see the row)
Rule = Callable[[dict[str, Any], int], "dict[str, Any] | str | None"]


@dataclass(frozen=True)
class ReviewRoundTrip:
    """What :func:`annotate_queue` did: the project, the export file, what was submitted."""

    project_id: int
    export_path: Path
    submitted: pd.DataFrame  # review_id, run_id, reviewer (email), one column per field
    skipped: int


def annotate_queue(server: LabelStudioServer, queue: pd.DataFrame, schema: list[RatingField],
                   rule: Rule, destination: Path, reviewers: Sequence[str] = REVIEWERS,
                   texts: Mapping[str, bool] | None = None, emails: bool = True
                   ) -> ReviewRoundTrip:
    """Review a queue in Label Studio as scripted reviewers would, and export the result.

    Copies the queue's images under the server's document root, creates a project with
    ``labeling_config(schema, texts)`` (``texts``: the roles with any text in the queue) and a
    local-files storage, imports ``label_studio_tasks``, then lets each reviewer (a real user,
    ``reviewers[i]``) answer each row as ``rule(row, i)`` says, and writes the JSON export to
    ``destination`` (``emails``: see :meth:`LabelStudioClient.export`).
    """
    project_id, task_ids = _project_of(server, queue, schema, texts)
    submitted, skipped = [], 0
    for index, email in enumerate(reviewers):
        client = server.user(email)
        for row in queue.to_dict("records"):
            answers = rule(row, index)
            if answers == SKIP:
                client.skip(task_ids[str(row["review_id"])])
                skipped += 1
            elif isinstance(answers, dict):
                client.annotate(task_ids[str(row["review_id"])],
                                label_studio_result(schema, answers))
                submitted.append(_submitted(row, email, schema, answers))
    server.admin.export(project_id, destination, emails=emails)
    return ReviewRoundTrip(project_id, destination, pd.DataFrame(submitted), skipped)


def _project_of(server: LabelStudioServer, queue: pd.DataFrame, schema: list[RatingField],
                texts: Mapping[str, bool] | None) -> tuple[int, dict[str, int]]:
    """A new project holding the queue; its id and ``{review_id: task id}``."""
    folder = server.document_root / f"queue-{uuid.uuid4().hex[:8]}"
    copies = _copy_images(queue["image_path"], folder)
    if texts is None:
        texts = {role: bool(queue[role].map(bool).any()) for role in TEXT_ROLES
                 if role in queue.columns}
    admin = server.admin
    project = admin.create_project(f"Review {folder.name}", labeling_config(schema, texts))
    admin.add_local_storage(project["id"], folder)
    url = local_files_url(server.document_root)
    admin.import_tasks(project["id"], label_studio_tasks(queue, schema,
                                                         lambda path: url(copies[path])))
    task_ids = {str(task["data"]["review_id"]): task["id"] for task in admin.tasks(project["id"])}
    return int(project["id"]), task_ids


def _copy_images(paths: Iterable[str], folder: Path) -> dict[str, str]:
    """Copy each distinct image into ``folder`` (Label Studio serves files under its document
    root only); ``{original path: copy}``."""
    folder.mkdir(parents=True)
    copies: dict[str, str] = {}
    for path in dict.fromkeys(str(p) for p in paths):
        copy = folder / f"{len(copies):05d}{Path(path).suffix}"
        shutil.copy2(path, copy)
        copies[path] = str(copy)
    return copies


def _submitted(row: dict[str, Any], email: str, schema: list[RatingField],
               answers: Mapping[str, Any]) -> dict[str, Any]:
    return {"review_id": str(row["review_id"]), "run_id": str(row["run_id"]), "reviewer": email,
            **{field.name: answers.get(field.name) for field in schema}}
