"""Loads SQL files from include/sql. Only the project/dataset identifiers (validated settings) are
substituted into the text; values always travel as query parameters."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

from customer_pipelines.settings import SQL_DIR, Settings


@lru_cache(maxsize=256)
def _read(relative_path: str) -> str:
    return (SQL_DIR / relative_path).read_text()


def raw_sql(relative_path: str) -> str:
    """A file's text as it is (PostgreSQL statements use driver parameters, no identifiers)."""
    return _read(relative_path)


def load_sql(relative_path: str, settings: Settings) -> str:
    """The statement in ``include/sql/<relative_path>`` with its identifiers filled in."""
    return Template(_read(relative_path)).substitute(
        project=settings.bq_project,
        dataset=settings.bq_dataset,
        data_dataset=settings.bq_data_dataset,
    )


def sql_files(folder: str) -> list[str]:
    """The ``.sql`` files of a folder of include/sql, in the order they are applied."""
    return [f"{folder}/{p.name}" for p in sorted(Path(SQL_DIR / folder).glob("*.sql"))]
