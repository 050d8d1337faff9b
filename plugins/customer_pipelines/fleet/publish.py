"""Publish a few changed DAGs at once, from the command line's ``snapshot refresh``.

The DAG processor's parse of a shard file, asked for by every refresh (fleet/parsing.py), publishes
a change in Airflow's own time: its loop picks the request up, lists the DAG bundle again (at 50,000
DAGs Airflow loads every DAG of the bundle for that, some 4 s) and writes every DAG of the file,
changed or not (some 10 ms each). A person who has just edited a config and refreshed by hand waits
for all of it. So the command publishes the DAGs it changed itself, the way ``airflow dags
reserialize`` does but one DAG at a time: Airflow's own DagBag parses the DAG's shard file under the
DAG's parsing context (the factory then builds that one DAG, as on a worker), and Airflow's own
``update_dag_parsing_results_in_db`` (what ``sync_bag_to_db`` and the DAG processor call) writes it.
The DAG processor's parse that follows builds the same DAG, finds its hash unchanged and writes no
second version.

Only DAGs Airflow already has are published (a new config's DAG is created by the DAG processor,
which also creates its paused flag and permissions), at most ``MAX_PUBLISHED`` per refresh (more is
a bulk change: the parses asked for publish it), each in a transaction of its own: Airflow locks the
DAG's row while it writes it, so a DAG processor writing the same DAG at that moment waits for it
and then finds the hash unchanged. A DAG that cannot be published is left to those parses too: the
command reports it and does not fail, and no import error is recorded from here."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from customer_pipelines.fleet.parsing import shard_bundle
from customer_pipelines.fleet.shards import shard_file, shard_of
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)

MAX_PUBLISHED = 20
"""Most DAGs one refresh publishes itself (each costs a parse of one DAG and a write, tens of ms)."""


@dataclass
class PublishResult:
    published: list[str] = field(default_factory=list)
    """DAG ids written to Airflow by this command (live now)."""
    left: list[str] = field(default_factory=list)
    """DAG ids left to the DAG processor's parse: new DAGs, those over the limit, and failures."""
    failures: list[str] = field(default_factory=list)
    """Why a DAG could not be published (each also in ``left``)."""


def publish_dags(settings: Settings, dag_ids: Collection[str] | None) -> PublishResult:
    """Write the DAGs of these (changed) configs to Airflow now; None (every DAG may have changed)
    or more than MAX_PUBLISHED publishes none. Never raises: the parse requests publish the rest."""
    result = PublishResult()
    if dag_ids is None:
        return result
    wanted = sorted(dag_ids)
    if len(wanted) > MAX_PUBLISHED:
        result.left = wanted
        return result
    if not wanted:
        return result
    # Airflow's loggers write to stdout (its structlog setup), and a command's stdout is its result:
    # what Airflow logs while publishing (bundles loaded, the DagBag filled) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        _publish(settings, wanted, result)
    return result


def _publish(settings: Settings, wanted: list[str], result: PublishResult) -> None:
    try:
        existing = _existing_dags(settings, wanted)
        bundle_name, bundle_path, prefix = shard_bundle(settings)
        version = _bundle_version(settings)
    except Exception as exc:  # noqa: BLE001 - the parse requests publish them; say why here
        result.left = wanted
        result.failures.append(f"cannot read which DAGs Airflow has: {type(exc).__name__}: {exc}")
        return
    for dag_id in wanted:
        if dag_id not in existing:
            result.left.append(dag_id)  # new: the DAG processor creates it
            continue
        path = bundle_path / (prefix + shard_file(shard_of(dag_id, settings.fleet_shards)))
        try:
            if _publish_one(settings, dag_id, path, bundle_name, bundle_path, version):
                result.published.append(dag_id)
            else:
                result.left.append(dag_id)  # invalid or deleted since: the errors file and the parse say so
        except Exception as exc:  # noqa: BLE001 - one DAG never fails the command
            log.warning("could not publish %s now (its shard's parse will): %s", dag_id, exc)
            result.left.append(dag_id)
            result.failures.append(f"{dag_id}: {type(exc).__name__}: {exc}")


def _existing_dags(settings: Settings, dag_ids: list[str]) -> set[str]:
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    from customer_pipelines.airflow_db import metadata_session

    with metadata_session(settings) as session:
        return set(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(dag_ids))))


def _bundle_version(settings: Settings) -> str | None:
    """The bundle version the published DAGs are recorded with: with a snapshot store, the
    generation they are built from (published before them, fleet/bundle.py); otherwise none."""
    from customer_pipelines.snapshot_store import local_generation, publish_newest

    if not settings.snapshot_store_url:
        return None
    publish_newest(settings)
    generation = local_generation(settings.snapshot_file)
    return None if generation is None else str(generation)


def _publish_one(
    settings: Settings, dag_id: str, path: Path, bundle_name: str, bundle_path: Path, version: str | None
) -> bool:
    """Parse ``path`` under ``dag_id``'s parsing context with Airflow's DagBag and write what it
    built, as ``sync_bag_to_db`` does but for that DAG alone and touching no file's import errors;
    False when the file built no such DAG (the config is invalid or gone now). A DAG Airflow cannot
    write raises, and nothing of it is kept (the transaction is rolled back)."""
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import LazyDeserializedDAG

    from customer_pipelines.airflow_db import metadata_session

    with parsing_context(dag_id):
        bag = BundleDagBag(str(path), bundle_path=bundle_path, bundle_name=bundle_name)
    if dag_id not in bag.dags or bag.import_errors:
        return False
    serialize_errors: dict[tuple[str, str], str] = {}
    with metadata_session(settings) as session:
        update_dag_parsing_results_in_db(
            bundle_name,
            version,
            [LazyDeserializedDAG.from_dag(bag.dags[dag_id])],
            serialize_errors,
            None,
            set(),
            session=session,
            files_parsed=set(),
        )
        if serialize_errors:  # Airflow records these as the file's import errors: not from here
            raise RuntimeError("; ".join(serialize_errors.values())[:500])
    return True


@contextmanager
def parsing_context(dag_id: str) -> Iterator[None]:
    """Airflow's parsing context of one DAG (what a worker running its task has), restored after."""
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID

    before = os.environ.get(_AIRFLOW_PARSING_CONTEXT_DAG_ID)
    os.environ[_AIRFLOW_PARSING_CONTEXT_DAG_ID] = dag_id
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_AIRFLOW_PARSING_CONTEXT_DAG_ID, None)
        else:
            os.environ[_AIRFLOW_PARSING_CONTEXT_DAG_ID] = before
