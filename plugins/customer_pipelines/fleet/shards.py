"""The fleet's DAG files: configs spread over ``CP_FLEET_SHARDS`` shard files by a stable hash.

A config's shard is a function of its own DAG id only (``snapshot.bucket_of``, then the bucket modulo
the shard count), so configs added or removed elsewhere never move it: a DAG that moved file would
lose its identity for a parse cycle (stale in one file until the other is parsed). Each shard file is
parsed on its own, in parallel by the DAG processor's processes, and re-parsed only when one of its
configs changes (fleet/parsing.py). The repository ships ``MAX_SHARDS`` identical shard files; those
numbered at or above the configured count define no DAG."""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

SHARD_DIR = "customer_pipelines_fleet"
"""The shard files' folder inside the DAGs folder (the DAG bundle)."""
MAX_SHARDS = 128
"""Shard files shipped in ``dags/customer_pipelines_fleet/``: the largest ``CP_FLEET_SHARDS``."""
ERRORS_FILE = "customer_pipelines_config_errors.py"
"""The DAG file listing invalid configs as import errors (re-parsed whenever any config changes)."""

_SHARD_FILE = re.compile(r"shard_(\d{2,3})\.py$")


def shard_file(index: int) -> str:
    """The shard file's path relative to the DAGs folder."""
    return f"{SHARD_DIR}/shard_{index:02d}.py"


def shard_index(path: str | Path) -> int:
    """The shard a shard file builds, from its name (``shard_07.py`` -> 7)."""
    found = _SHARD_FILE.search(Path(path).name)
    if found is None:
        raise ValueError(f"not a shard file name: {Path(path).name!r} (expected shard_NN.py)")
    return int(found.group(1))


def shard_of(dag_id: str, shards: int) -> int:
    """The shard holding ``dag_id`` with ``shards`` shard files."""
    from customer_pipelines.snapshot import bucket_of

    return bucket_of(dag_id) % shards


def files_to_reparse(dag_ids: Iterable[str] | None, shards: int) -> list[str]:
    """The DAG files to parse again after these DAGs' configs changed: their shards, and the errors
    file (a change can make a config invalid, or valid again). None: every file (all may differ)."""
    if dag_ids is None:
        indexes: set[int] = set(range(shards))
    else:
        indexes = {shard_of(dag_id, shards) for dag_id in dag_ids}
        if not indexes:
            return []
    return [shard_file(i) for i in sorted(indexes)] + [ERRORS_FILE]


def register_shard(namespace: MutableMapping[str, Any], file: str) -> None:
    """Put the DAGs of the shard ``file`` builds into its globals (how Airflow finds them). A file
    numbered at or above ``CP_FLEET_SHARDS`` defines nothing; on a worker running one task the
    factory builds only that task's DAG (load_fleet reads Airflow's parsing context)."""
    from customer_pipelines.settings import get_parse_settings

    settings = get_parse_settings()
    index = shard_index(file)
    if index >= settings.fleet_shards:
        return  # before importing the factory: an unused shard file costs next to nothing
    from customer_pipelines.fleet.factory import register_dags

    register_dags(namespace, shard=index, shards=settings.fleet_shards, settings=settings)
