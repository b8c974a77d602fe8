"""The stack's databases on the machine's PostgreSQL server: ``<prefix>_prefect`` and
``<prefix>_mlflow``, created when missing (never dropped: ``down`` keeps the data). The server
is not started here; an unreachable one is an error that says where it was looked for."""

from __future__ import annotations

from typing import Any

from tasks.services.procs import ServiceError
from tasks.services.specs import Options

KINDS = ("prefect", "mlflow")


def _connect(options: Options, database: str = "postgres") -> Any:
    """A psycopg2 connection (autocommit); ServiceError when psycopg2 is missing or the
    server does not answer."""
    try:
        import psycopg2
    except ImportError:
        raise ServiceError("postgres", "psycopg2 is not installed (pip install "
                           "psycopg2-binary)") from None
    try:
        connection = psycopg2.connect(host=options.pg_host, port=options.pg_port,
                                      user=options.pg_user, dbname=database, connect_timeout=5)
    except psycopg2.OperationalError as error:
        raise ServiceError("postgres", f"PostgreSQL is not reachable on {options.pg_host}:"
                           f"{options.pg_port} as user {options.pg_user}: "
                           f"{' '.join(str(error).split())} — start the server (it is not "
                           "part of the stack)") from None
    connection.autocommit = True
    return connection


def check_server(options: Options) -> None:
    """ServiceError unless the PostgreSQL server answers."""
    _connect(options).close()


def ensure_databases(options: Options) -> list[str]:
    """Create the stack's databases that are missing; returns the names created."""
    connection = _connect(options)
    created = []
    try:
        with connection.cursor() as cursor:
            for name in (options.database(kind) for kind in KINDS):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')  # name checked by Options
                    created.append(name)
    finally:
        connection.close()
    return created


def drop_databases(options: Options) -> None:
    """Drop the stack's databases (tests; a user's data is never dropped by the stack)."""
    connection = _connect(options)
    try:
        with connection.cursor() as cursor:
            for kind in KINDS:
                cursor.execute(f'DROP DATABASE IF EXISTS "{options.database(kind)}" WITH (FORCE)')
    finally:
        connection.close()


def tables(options: Options, kind: str) -> set[str]:
    """The tables of the stack's ``kind`` database (public schema)."""
    connection = _connect(options, options.database(kind))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()
