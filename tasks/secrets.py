"""Secrets stay in the process: which keys name secrets, credentials inside URLs, redacted
copies for everything that is printed, logged or stored, and the load-time rule that keeps
credentials out of the config (the config is stored by Prefect as the flow's parameter).

**Secret keys.** A key is split into segments on ``.``, ``_``, ``-``, ``/``, spaces and camelCase
boundaries (``apiToken`` -> ``api``, ``token``; ``AWSAccessKeyId`` -> ``aws``, ``access``,
``key``, ``id``), lower-cased. It names a secret when a segment is
one of ``SECRET_WORDS`` (password, token, secret, credentials, auth, signature, ...) or two
neighbouring segments are a ``KEY_QUALIFIERS`` word followed by ``key`` (``api_key``,
``access_key``, ``private_key``). Only whole segments count: ``max_new_tokens``, ``tokenizer``,
``tokens``, ``author`` and ``key_column`` are not secret.

**Credentials in strings.** ``scheme://user:password@host`` (also ``scheme://token@host``),
query parameters with a secret name (``?token=``, ``X-Amz-Signature=``, ``sig=``), ``name=value``
pairs with a secret name and ``Basic``/``Bearer`` credentials. ``redact_url``/``redact_text``
drop the user info and put ``***`` in place of the values.

**References.** ``${env:NAME}`` stands for the environment variable ``NAME``; it is not a
secret and is shown as is. ``resolve_references`` replaces references by their values where
the value is needed (at run time, never in what is stored).

This module imports nothing of the project (the config schema uses it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pwd", "passphrase", "secret", "secrets", "token",
    "credential", "credentials", "auth", "oauth", "authorization", "signature", "sig", "cookie",
    "bearer", "jwt", "apikey", "accesskey", "secretkey", "privatekey",
})
KEY_QUALIFIERS = frozenset({
    "api", "access", "private", "secret", "signing", "encryption", "ssh", "client", "master",
    "account", "session",
})

ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_SEPARATORS = re.compile(r"[._\-/\s]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# user info: everything up to the authority's last "@" (passwords may hold a raw "@")
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#\"<>\\`{}|]+@")
_QUERY = re.compile(r"([?&;])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*)")
_ASSIGNMENT = re.compile(r"(?<![\w.\-?&;])([A-Za-z][\w.\-]*)(\s*=\s*)([^\s,;&\"'<>)\]}]+)")
_AUTH_HEADER = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~\-]{8,}", re.IGNORECASE)

TRACKING_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                "MLFLOW_TRACKING_URI")


def key_segments(key: str) -> list[str]:
    """``"metric_options.clip_score.apiToken"`` -> metric, options, clip, score, api, token."""
    return [part.lower() for piece in _SEPARATORS.split(str(key)) if piece
            for part in _CAMEL.split(piece) if part]


def is_secret_key(key: str) -> bool:
    """Whether a key (or a dotted path of keys) names a secret; see the module docstring."""
    segments = key_segments(key)
    if any(segment in SECRET_WORDS for segment in segments):
        return True
    return any(first in KEY_QUALIFIERS and second == "key"
               for first, second in zip(segments, segments[1:], strict=False))


def is_reference(value: Any) -> bool:
    """A ``${env:NAME}`` reference (not a secret itself)."""
    return isinstance(value, str) and ENV_REFERENCE.fullmatch(value.strip()) is not None


def _public(value: Any) -> bool:
    """Values that cannot carry a secret: nothing, booleans, empty strings, references."""
    return value is None or isinstance(value, bool) or value == "" or is_reference(value)


def _query_value(match: re.Match[str]) -> str:
    lead, name, value = match.groups()
    return f"{lead}{name}={MASK}" if value and is_secret_key(unquote(name)) else match.group(0)


def _assignment_value(match: re.Match[str]) -> str:
    name, sep, value = match.groups()
    if is_secret_key(name) and not is_reference(value) and value != MASK:
        return f"{name}{sep}{MASK}"
    return match.group(0)


def redact_text(text: str) -> str:
    """``text`` with URL user info removed and secret query values, ``secret=value`` pairs and
    Basic/Bearer credentials replaced by ``***`` — for messages that may quote a URI."""
    if not isinstance(text, str) or not text:
        return text
    text = _USERINFO.sub(r"\1", text)
    text = _QUERY.sub(_query_value, text)
    text = _ASSIGNMENT.sub(_assignment_value, text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", text)


def redact_url(uri: str | None) -> str | None:
    """A URI without ``user:password@`` and with secret query values as ``***``:
    ``http://u:p@host/x?token=t&a=1`` -> ``http://host/x?token=***&a=1``."""
    return redact_text(uri) if uri else uri


def has_url_credentials(text: Any) -> bool:
    """Whether a string holds a URL with user info or a secret query parameter."""
    if not isinstance(text, str) or not text:
        return False
    return bool(_USERINFO.search(text)) or _QUERY.sub(_query_value, text) != text


def mask_value(key: str, value: Any) -> Any:
    """The value to show for ``key``: ``***`` for a secret key (references stay readable),
    else the value with any URL credentials removed."""
    if is_secret_key(key) and not _public(value):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def redact(obj: Any, key: str | None = None) -> Any:
    """A deep copy of dicts/lists/tuples where values under secret keys are ``***`` (whole
    subtrees included) and every string has its URL credentials removed. ``key`` is the key
    (or dotted path) ``obj`` is stored under, if any."""
    if key is not None and is_secret_key(key) and not _public(obj):
        return MASK
    if isinstance(obj, Mapping):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def url_credential_paths(obj: Any, path: str = "") -> list[str]:
    """Dotted paths of the strings in ``obj`` that hold URLs with credentials."""
    if isinstance(obj, Mapping):
        return [found for k, v in obj.items()
                for found in url_credential_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list | tuple):
        return [found for i, v in enumerate(obj)
                for found in url_credential_paths(v, f"{path}[{i}]")]
    return [path or "value"] if has_url_credentials(obj) else []


# ------------------------------------------------------------------ keeping secrets out of configs


def env_name(*parts: str) -> str:
    """``("BIFOCAL_SECRET", "clip_score", "api_token")`` ->
    ``BIFOCAL_SECRET_CLIP_SCORE_API_TOKEN``."""
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_")


def split_tracking_uri(uri: str | None,
                       environ: MutableMapping[str, str] | None = None) -> str | None:
    """A tracking URI without credentials; the credentials go into the process environment,
    where MLflow reads them itself.

    - ``http(s)://user:password@host`` -> ``http(s)://host`` with ``MLFLOW_TRACKING_USERNAME`` /
      ``MLFLOW_TRACKING_PASSWORD`` set (``http(s)://token@host``: ``MLFLOW_TRACKING_TOKEN``).
    - any other URI carrying credentials (a database URI such as
      ``postgresql://user:password@host/db``, or a secret query parameter) -> ``None``, with the
      whole URI in ``MLFLOW_TRACKING_URI``, which bifocal uses when the config gives none.
    """
    if not uri or not has_url_credentials(uri):
        return uri
    env = os.environ if environ is None else environ
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if parts.scheme in ("http", "https") and at and not has_url_credentials(
            urlunsplit(parts._replace(netloc=host))):
        user, colon, password = userinfo.partition(":")
        if colon:
            env["MLFLOW_TRACKING_USERNAME"] = unquote(user)
            env["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
        else:
            env["MLFLOW_TRACKING_TOKEN"] = unquote(user)
        return urlunsplit(parts._replace(netloc=host))
    env["MLFLOW_TRACKING_URI"] = uri
    return None


def externalize_secrets(options: Any, prefix: str,
                        environ: MutableMapping[str, str] | None = None) -> Any:
    """A copy of ``options`` where every secret (a value under a secret key, or a string with
    URL credentials) is moved into the environment variable ``<PREFIX>_<PATH>`` and replaced by
    the reference ``${env:<PREFIX>_<PATH>}``; references are kept. Numbers become strings."""
    env = os.environ if environ is None else environ

    def walk(value: Any, path: tuple[str, ...], secret: bool) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, (*path, str(k)), secret or is_secret_key(str(k)))
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, (*path, str(i)), secret) for i, v in enumerate(value)]
        if _public(value) or not (secret or has_url_credentials(value)):
            return value
        name = env_name(prefix, *path)
        env[name] = str(value)
        return f"${{env:{name}}}"

    return walk(options, (), False)


def resolve_references(obj: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` with every ``${env:NAME}`` string replaced by the variable's value;
    a variable that is not set is an error naming the variable (never a value)."""
    env = os.environ if environ is None else environ
    if isinstance(obj, Mapping):
        return {k: resolve_references(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_references(v, env) for v in obj]
    if isinstance(obj, tuple):
        return tuple(resolve_references(v, env) for v in obj)
    if is_reference(obj):
        name = ENV_REFERENCE.fullmatch(obj.strip()).group(1)  # type: ignore[union-attr]
        if name not in env:
            raise ValueError(f"environment variable {name} is not set (referenced as "
                             f"${{env:{name}}} in the configuration)")
        return env[name]
    return obj
