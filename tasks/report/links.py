"""Where the report's run lives, for links in its header: the MLflow run page (only on an
http(s) tracking server) and the Prefect flow run page (only on a real Prefect server: not the
temporary one Prefect starts in-process, whose pages are gone once the process ends)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from tasks.secrets import redact_url


def mlflow_run_url(tracking_uri: str | None, run_id: str | None) -> str | None:
    """The MLflow UI's address of the run, for an http(s) tracking URI (without credentials)."""
    if not tracking_uri or not run_id or not tracking_uri.startswith(("http://", "https://")):
        return None
    base = (redact_url(tracking_uri) or tracking_uri).rstrip("/")
    return f"{base}/#/runs/{run_id}"


def prefect_flow_run() -> dict[str, str]:
    """The current Prefect flow run's id and name (from its context, whatever the server),
    and its UI address when the API is a real server (``PREFECT_UI_URL``, else derived from
    ``PREFECT_API_URL``); empty outside a flow run."""
    from prefect import runtime

    flow_run_id = runtime.flow_run.id
    if not flow_run_id:
        return {}
    out = {"flow_run_id": str(flow_run_id), "flow_run_name": str(runtime.flow_run.name)}
    ui = prefect_ui_url()
    return out | ({"flow_run_url": f"{ui}/runs/flow-run/{flow_run_id}"} if ui else {})


def prefect_ui_url() -> str | None:
    """The Prefect UI's base address, or None for an ephemeral / temporary server (or when
    the settings say nothing)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    api, ui = settings.api.url, settings.ui_url
    if not api or not ui or not ui.startswith(("http://", "https://")):
        return None
    if temporary_server(api):
        return None
    return (redact_url(ui) or ui).rstrip("/")


def temporary_server(api_url: str) -> bool:
    """Whether ``api_url`` is a Prefect server this process started for itself (ephemeral
    mode or the test harness); its module is only looked at when already loaded."""
    module = sys.modules.get("prefect.server.api.server")
    servers: dict[Any, Any] = getattr(getattr(module, "SubprocessASGIServer", None),
                                      "_instances", {}) or {}
    return any(getattr(s, "running", False) and getattr(s, "port", None)
               and api_url.rstrip("/") == s.api_url for s in list(servers.values()))


def created_at() -> str:
    """Now in UTC, to the second (ISO 8601): when the report was made."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
