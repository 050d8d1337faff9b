"""Change-driven parsing: ask Airflow's DAG processor to parse the shard files whose configs
changed, ahead of its timer (what Airflow's ``PUT /api/v2/parseDagFile/{file_token}`` does: a row in
``dag_priority_parsing_request``, which the DAG processor claims at its next loop).

The snapshot refresh (syncer, command line) and the REST API's writes send these requests; the DAG
processor's own timer (``min_file_process_interval``, ``PERIODIC_REPARSE_SECONDS`` on the shipped
stacks) only converges a request that was lost (the metadata database down at that moment, a
processor restarted while holding it), so it is long and the processor rests between changes. A
refresh by hand also publishes the few DAGs it changed at once, before these parses (fleet/publish.py)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from customer_pipelines.fleet.shards import SHARD_DIR, files_to_reparse
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)

PERIODIC_REPARSE_SECONDS = 86_400
"""The DAG processor's periodic re-parse of every file on the shipped stacks (daily): a lost request
is converged within this time; changes themselves are parsed on request within seconds, a request
the syncer could not send is sent again at its next round, and a DAG processor that restarts parses
every file at once. A re-parse of the whole fleet is not the parse alone (about 2 ms per DAG,
bench/fleet_parse.py): Airflow then writes every DAG to its database, changed or not, about 13 ms
of CPU per DAG in all here (bench/fleet_idle.py: some 650 s of CPU at 50,000 configs). Hourly that
was 18% of a core for nothing; daily it is under 1%."""
BUNDLE_REFRESH_SECONDS = 600
"""Airflow's ``[dag_processor] refresh_interval`` on the shipped stacks: how often the DAG processor
lists the DAGs folder for files added or deleted. Each listing also loads every DAG of the bundle
from the metadata database to deactivate those of deleted files (about 4 s at 50,000 DAGs). The
fleet's files change only with a deployment (which restarts the processor, and it lists them at
start) and a parse request names its file, so listing more often buys nothing."""
SERIALIZED_DAG_MIN_UPDATE_SECONDS = 0
"""Airflow's ``[core] min_serialized_dag_update_interval`` on the shipped stacks. Airflow's default
(30 s) skips writing a DAG parsed again within 30 s of its last write, changed or not: the parse a
change asked for would publish nothing, and with change-driven parsing the next parse is the
periodic one, an hour later. The fleet's DAGs are byte-identical unless their config changed and
are parsed only on change, so the interval saves no writes here; 0 publishes every change."""
DEFAULT_BUNDLE = "dags-folder"


def request_reparse(settings: Settings, dag_ids: Iterable[str] | None) -> list[str]:
    """Ask for a parse of the files holding these DAGs (None: every shard file); returns the files
    asked for, relative to the DAG bundle. Needs Airflow's metadata database (the syncer, the
    command line and the API server have it; task code does not)."""
    files = files_to_reparse(None if dag_ids is None else list(dag_ids), settings.fleet_shards)
    if files:
        request_files(settings, files)
    return files


def request_files(settings: Settings, files: Sequence[str]) -> None:
    """One pending request per file (its id is Airflow's hash of bundle and path): a request already
    waiting covers a newer change too, since the parse reads the newest snapshot."""
    from airflow.models.dagbag import DagPriorityParsingRequest

    from customer_pipelines.airflow_db import metadata_session

    with metadata_session(settings) as session:
        bundle, prefix = _shard_location(session)
        for file in files:
            relative = prefix + file
            request_id = hashlib.md5(f"{bundle}:{relative}".encode()).hexdigest()  # as dagbag.generate_md5_hash
            if session.get_bind().dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert

                session.execute(
                    insert(DagPriorityParsingRequest)
                    .values(id=request_id, bundle_name=bundle, relative_fileloc=relative)
                    .on_conflict_do_nothing()
                )
            elif session.get(DagPriorityParsingRequest, request_id) is None:
                session.add(DagPriorityParsingRequest(bundle_name=bundle, relative_fileloc=relative))
    log.debug("asked the DAG processor to parse %d file(s): %s", len(files), ", ".join(files[:5]))


def shard_bundle(settings: Settings) -> tuple[str, Path, str]:
    """The DAG bundle holding the shard files: its name, its folder, and the path of the DAGs folder
    inside it ('' when the bundle is the DAGs folder), which every shard file's path starts with."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    from customer_pipelines.airflow_db import metadata_session

    with metadata_session(settings) as session:
        name, prefix = _shard_location(session)
    bundle = DagBundlesManager().get_bundle(name)
    bundle.initialize()
    return name, Path(bundle.path), prefix


def _shard_location(session: Any) -> tuple[str, str]:
    """(bundle name, prefix of the shard folder in it), from a parsed shard (the bundle's root may be
    above dags/); Airflow's default bundle before any shard was parsed."""
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    found = session.execute(
        select(DagModel.bundle_name, DagModel.relative_fileloc)
        .where(DagModel.relative_fileloc.like(f"%{SHARD_DIR}/%"))
        .limit(1)
    ).first()
    if found is None:
        return DEFAULT_BUNDLE, ""
    return found[0], found[1][: found[1].index(SHARD_DIR)]


HELD_REQUESTS: dict[int, list[Any]] = {}
"""Parse requests each DAG processor (by ``id``) claimed while their file was being parsed."""


def keep_requests_for_files_being_parsed() -> None:
    """Make Airflow's DAG processor parse a requested file again after the parse it finds running.

    Airflow 3.3.2's ``DagFileProcessorManager`` deletes a request when it claims it and then skips a
    queued file that is being parsed (``_start_new_processes``: "Stop creating duplicate processor"):
    a change patched into the snapshot after that parse read it was then published only by the daily
    re-parse (a config created through the API stayed without its DAG). This wraps the processor's
    documented extension point, ``claim_priority_files``: a claimed file whose parse is running is
    held and handed over at the first loop after that parse ends. Called in the ``airflow
    dag-processor`` process only (plugins/airflow_local_settings.py); idempotent."""
    from airflow.dag_processing.manager import DagFileProcessorManager

    claim = DagFileProcessorManager.claim_priority_files
    if getattr(claim, "keeps_files_being_parsed", False):
        return

    def claim_priority_files(manager: DagFileProcessorManager) -> list[Any]:
        being_parsed = {file.presence_key for file in manager._processors}
        offered = HELD_REQUESTS.pop(id(manager), []) + list(claim(manager))
        ready, held = [], []
        for file in offered:
            (held if file.presence_key in being_parsed else ready).append(file)
        if held:
            HELD_REQUESTS[id(manager)] = held
            log.info("holding %d parse request(s) until their file's running parse ends", len(held))
        return ready

    claim_priority_files.keeps_files_being_parsed = True  # type: ignore[attr-defined]
    DagFileProcessorManager.claim_priority_files = claim_priority_files  # type: ignore[method-assign]
