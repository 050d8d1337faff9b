"""Airflow's metadata database, as the syncer and the command line use it (task code never
does: Airflow 3 gives tasks no metadata-DB access). One session factory whose statements and lock
waits are bounded, so a row another process holds fails the caller instead of hanging it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from customer_pipelines.settings import Settings, get_settings


@contextmanager
def metadata_session(settings: Settings | None = None) -> Iterator[Any]:
    """A session on Airflow's metadata database whose statements and lock waits are bounded
    (CP_AIRFLOW_DB_STATEMENT_TIMEOUT_SECONDS, CP_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS, this transaction
    only): a row another process holds fails the round instead of hanging the syncer."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    settings = settings or get_settings()
    with create_session() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                text(
                    "SELECT set_config('statement_timeout', :statement, true), set_config('lock_timeout', :lock, true)"
                ),
                {
                    "statement": f"{int(settings.airflow_db_statement_timeout_seconds * 1000)}ms",
                    "lock": f"{int(settings.airflow_db_lock_timeout_seconds * 1000)}ms",
                },
            )
        yield session
