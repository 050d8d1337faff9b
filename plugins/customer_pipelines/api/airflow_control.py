"""What the API changes and reads in Airflow itself, from inside Airflow's API server (which, unlike
task code, has the metadata database): paused flags by the syncer's own rules, a customer's pool, a
priority re-parse of a config's shard file, a manual run, and the running figures."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from customer_pipelines.airflow_db import metadata_session
from customer_pipelines.fleet.parsing import request_reparse
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)

CONVERGE_SECONDS = 12.0
"""How long a write keeps trying to set a DAG's paused flag before leaving it to the sync round."""


class AirflowControl:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def converge(self, runnable: dict[str, bool]) -> tuple[list[str], list[str]]:
        """Pause or unpause these DAGs now, as the next sync round would (fleet/sync.sync_paused:
        the syncer's ledger of its own pauses, a person's pause kept, a DAG with a task running
        paused once it ends); returns (paused, unpaused)."""
        from sqlalchemy.exc import OperationalError

        from customer_pipelines.fleet.sync import sync_paused
        from customer_pipelines.runs.quota import SyncerPauses

        deadline = time.monotonic() + CONVERGE_SECONDS
        while True:
            try:
                result = sync_paused(runnable, SyncerPauses(self.settings), self.settings, only=set(runnable))
                return result.paused, result.unpaused
            except OperationalError:
                # The DAG processor writes every DAG row of the fleet file in one transaction while
                # it parses it; a wait for one of those rows past CP_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS
                # is tried again, then left to the next sync round.
                if time.monotonic() > deadline:
                    raise
                log.warning("paused flags of %s waited for a lock; trying again", sorted(runnable)[:3])
                time.sleep(0.2)

    def request_reparse(self, dag_ids: Iterable[str]) -> None:
        """Ask the DAG processor to parse the shard files of these DAGs next, ahead of its timer: a
        config created, changed or paused is a DAG as the snapshot says within seconds, and only
        its shard is parsed again (fleet/parsing.py)."""
        request_reparse(self.settings, dag_ids)

    def set_pool(self, pool: str, slots: int, description: str) -> None:
        """One customer's pool (a plan change, a suspension) without waiting for the sync round."""
        from airflow.models.pool import Pool
        from sqlalchemy import select

        with metadata_session(self.settings) as session:
            existing = session.scalars(select(Pool).where(Pool.pool == pool)).first()
            if existing is None:
                session.add(Pool(pool=pool, slots=slots, description=description, include_deferred=False))
            else:
                existing.slots, existing.description = slots, description

    def dag_exists(self, dag_id: str) -> bool:
        from airflow.models.dag import DagModel
        from sqlalchemy import select

        with metadata_session(self.settings) as session:
            return session.scalar(select(DagModel.dag_id).where(DagModel.dag_id == dag_id)) is not None

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """A manual run of the DAG now (the operator's quota gate still decides when it starts)."""
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.types import DagRunTriggeredByType

        run = trigger_dag(dag_id, run_id=run_id, conf=conf, triggered_by=DagRunTriggeredByType.REST_API)
        if run is None:
            raise RuntimeError(f"Airflow created no run of {dag_id}")
        return {"dag_id": dag_id, "run_id": run.run_id, "state": str(run.state)}

    def running_in_pool(self, pool: str) -> tuple[int, int | None]:
        """(task instances of the pool running or queued now, the pool's slots; None: no pool)."""
        from airflow.models.pool import Pool
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import func, select

        with metadata_session(self.settings) as session:
            slots = session.scalar(select(Pool.slots).where(Pool.pool == pool))
            running = session.scalar(
                select(func.count())
                .select_from(TaskInstance)
                .where(
                    TaskInstance.pool == pool,
                    TaskInstance.state.in_((TaskInstanceState.RUNNING, TaskInstanceState.QUEUED)),
                )
            )
        return int(running or 0), slots

    def pools_in_use(self, pool_prefix: str) -> dict[str, tuple[int, int]]:
        """Every fleet pool: (task instances running or queued now, slots), in two reads."""
        from airflow.models.pool import Pool
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import func, select

        with metadata_session(self.settings) as session:
            slots = dict(session.execute(select(Pool.pool, Pool.slots).where(Pool.pool.startswith(pool_prefix))).all())
            running = dict(
                session.execute(
                    select(TaskInstance.pool, func.count())
                    .where(
                        TaskInstance.pool.startswith(pool_prefix),
                        TaskInstance.state.in_((TaskInstanceState.RUNNING, TaskInstanceState.QUEUED)),
                    )
                    .group_by(TaskInstance.pool)
                ).all()
            )
        return {pool: (int(running.get(pool, 0)), int(slots[pool])) for pool in slots}

    def paused_dags(self) -> set[str]:
        """The DAG ids Airflow has paused (active DAGs only)."""
        from airflow.models.dag import DagModel
        from sqlalchemy import select

        with metadata_session(self.settings) as session:
            return set(session.scalars(select(DagModel.dag_id).where(DagModel.is_paused, DagModel.is_stale.is_(False))))

    def fleet_figures(self, pool_prefix: str, since: datetime) -> dict[str, int]:
        """Task instances of the fleet's pools: running now, queued now, failed since ``since``."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import and_, func, select

        in_fleet = TaskInstance.pool.startswith(pool_prefix)
        with metadata_session(self.settings) as session:

            def count(*where: Any) -> int:
                return int(session.scalar(select(func.count()).select_from(TaskInstance).where(in_fleet, *where)) or 0)

            return {
                "running": count(TaskInstance.state == TaskInstanceState.RUNNING),
                "queued": count(TaskInstance.state.in_((TaskInstanceState.QUEUED, TaskInstanceState.SCHEDULED))),
                "failed_today": count(
                    and_(TaskInstance.state == TaskInstanceState.FAILED, TaskInstance.end_date >= since)
                ),
            }
