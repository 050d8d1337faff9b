"""Loads SQL files from include/sql. Only the project/dataset identifiers (validated settings) are
substituted into the text; values always travel as query parameters."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

from customer_pipelines.settings import SQL_DIR, Plane, Settings


@lru_cache(maxsize=256)
def _read(relative_path: str) -> str:
    return (SQL_DIR / relative_path).read_text()


def raw_sql(relative_path: str) -> str:
    """A file's text as it is (PostgreSQL statements use driver parameters, no identifiers)."""
    return _read(relative_path)


def load_sql(relative_path: str, settings: Settings, plane: Plane = "control") -> str:
    """The statement in ``include/sql/<relative_path>`` with the identifiers of a plane filled in:
    ``${project}`` is that plane's project, and only that plane's dataset (``${dataset}`` on the
    control plane, ``${data_dataset}`` on the data plane) is known, so a file that names the other
    plane's tables fails here instead of reaching into a BigQuery it does not run on."""
    identifiers = {"project": settings.project_of(plane)}
    if plane == "data":
        identifiers["data_dataset"] = settings.bq_data_dataset
    else:
        identifiers["dataset"] = settings.bq_dataset
    try:
        return Template(_read(relative_path)).substitute(identifiers)
    except KeyError as exc:
        raise ValueError(f"{relative_path} names ${{{exc.args[0]}}}, which the {plane} plane does not have") from exc


def sql_files(folder: str) -> list[str]:
    """The ``.sql`` files of a folder of include/sql, in the order they are applied."""
    return [f"{folder}/{p.name}" for p in sorted(Path(SQL_DIR / folder).glob("*.sql"))]
