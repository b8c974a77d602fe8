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
and lasts 5 minutes; a 401 refreshes it once. More annotators sign up through the signup form
(open signup is Label Studio's default), so every annotation is made by its own real user.

A fresh data directory takes its migrations (~40 s to ``/health`` on an idle 2-core machine, ~2.5 min
on a loaded one); the migrated, user-less database is then kept under
``.cache/label-studio/template-<version>`` and copied into each later server's data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from tasks.config import RatingField
from tests.services import free_port, stop_process_group, unavailable

VERSION = "1.23.2"
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "label-studio"
VENV = CACHE / "venv"
TEMPLATE = CACHE / f"template-{VERSION}"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@bifocal.test", "bifocal-admin-password"
START_TIMEOUT_S = 360  # a first start migrates: ~2.5 min on a loaded 2-core machine
HTTP_TIMEOUT_S = 60


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
        token = browser.post(url + "/api/token/", timeout=HTTP_TIMEOUT_S,
                             headers={"X-CSRFToken": browser.cookies["csrftoken"],
                                      "Referer": url + "/"})
        client = cls(url, email, _json(token)["token"])
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

    def export(self, project_id: int, destination: Path) -> Path:
        """Download the project's JSON export (tasks with annotations) to ``destination``."""
        answer = self.request("GET", f"/api/projects/{project_id}/export",
                              params={"exportType": "JSON"})
        _check(answer)
        destination.write_bytes(answer.content)
        return destination


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

    def add_user(self, email: str, password: str = "bifocal-reviewer-password"
                 ) -> LabelStudioClient:
        """A new real user of the organization (signup form), logged in with its own token."""
        return LabelStudioClient.signup(self.url, email, password)


def label_studio_binary() -> Path | None:
    binary = VENV / "bin" / "label-studio"
    return binary if binary.exists() else None


def server_env(data_dir: Path, document_root: Path, port: int) -> dict[str, str]:
    """The environment of ``label-studio start``: offline, SQLite, local files, an admin."""
    settings = {
        "BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LATEST_VERSION_CHECK": "false",  # no question to PyPI at start
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
        "USERNAME": ADMIN_EMAIL, "PASSWORD": ADMIN_PASSWORD,
        "HOST": f"http://127.0.0.1:{port}",
    }
    return {**os.environ, "DJANGO_DB": "sqlite", **{f"LABEL_STUDIO_{k}": v
                                                    for k, v in settings.items()}}


@contextmanager
def label_studio_server(root: Path) -> Iterator[LabelStudioServer]:
    """A Label Studio server with its data and document root under ``root``; stopped after."""
    binary = label_studio_binary()
    if binary is None:
        unavailable(f"Label Studio is not installed in {VENV}: run scripts/setup-label-studio.sh")
    data_dir, document_root = root / "label-studio-data", root / "documents"
    document_root.mkdir(parents=True, exist_ok=True)
    _copy_template(data_dir)
    port = free_port()
    log_path = root / "label-studio.log"
    with log_path.open("wb") as log:
        process = _start(binary, port, data_dir, document_root, log)
        try:
            yield _connect(process, port, document_root, log_path)
        finally:
            stop_process_group(process, timeout=30)
    _save_template(data_dir)


def _start(binary: Path, port: int, data_dir: Path, document_root: Path,
           log: Any) -> subprocess.Popen:
    command = [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(port)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir.parent,
                            env=server_env(data_dir, document_root, port),
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _connect(process: subprocess.Popen, port: int, document_root: Path,
             log_path: Path) -> LabelStudioServer:
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, START_TIMEOUT_S)
        admin = LabelStudioClient.login(url, ADMIN_EMAIL, ADMIN_PASSWORD)
    except (RuntimeError, requests.RequestException) as error:
        tail = log_path.read_text(errors="replace")[-3000:]
        unavailable(f"Label Studio did not start: {error}\n{tail}")
    return LabelStudioServer(url, document_root, admin)


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

TEMPLATE_FILES = ("label_studio.sqlite3", ".env")


def _copy_template(data_dir: Path) -> None:
    """Start from the kept migrated database when there is one (skips ~all migrations)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if all((TEMPLATE / name).exists() for name in TEMPLATE_FILES):
        for name in TEMPLATE_FILES:
            shutil.copy2(TEMPLATE / name, data_dir / name)


def _save_template(data_dir: Path) -> None:
    """Keep a migrated database without users or projects (once per Label Studio version)."""
    if TEMPLATE.exists() or not (data_dir / "label_studio.sqlite3").exists():
        return
    staging = CACHE / f".template-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    for name in TEMPLATE_FILES:
        shutil.copy2(data_dir / name, staging / name)
    _empty_database(staging / "label_studio.sqlite3")
    try:
        staging.rename(TEMPLATE)
    except OSError:  # another process kept one first
        shutil.rmtree(staging, ignore_errors=True)


def _empty_database(path: Path) -> None:
    raise NotImplementedError


# --- a scripted review round trip --------------------------------------------------------------

Rule = Callable[[dict[str, Any], RatingField, str], Any]


def annotate_queue(server: LabelStudioServer, queue: pd.DataFrame, schema: list[RatingField],
                   rule: Rule, destination: Path, annotators: int = 1) -> Path:
    raise NotImplementedError
