"""A fresh, migrated Airflow metadata database on a PostgreSQL server, for the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2


@contextmanager
def migrated_airflow_db(server_url: str) -> Iterator[str]:
    """Create a database, point this process's Airflow at it (before airflow is imported), migrate
    it, and drop it afterwards."""
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url.replace("postgresql://", "postgresql+psycopg2://")
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="cp-bench-")
    airflow = str(Path(sys.executable).with_name("airflow"))
    try:
        subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ)
        yield url
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
