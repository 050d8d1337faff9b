"""SLA breaches: each config's ``sla_breach_threshold_minutes`` becomes an Airflow 3 deadline alert
(measured from when the DAG run was queued). When it passes, Airflow's triggerer calls
``record_sla_breach``, which records the breach in ``sla_breach_events`` (shown by the
``sla_breaches`` view) and raises an alert through the failure policy's notifier.
``max_execution_duration_minutes`` is the task's ``execution_timeout`` (mirrored as TIMEOUT)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


async def record_sla_breach(
    config_id: str, customer_id: str, threshold_minutes: int, context: dict[str, Any] | None = None
) -> None:
    dag_run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    dag_id = dag_run.get("dag_id") or f"{customer_id}.{config_id}"
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id") or "unknown"
    row = {
        "run_key": f"{dag_id}/{run_id}",
        "config_id": config_id,
        "customer_id": customer_id,
        "dag_id": dag_id,
        "run_id": run_id,
        "threshold_minutes": threshold_minutes,
        "deadline_time": deadline.get("deadline_time"),
        "detected_at": datetime.now(UTC),
    }
    await asyncio.to_thread(_record, row)


def sla_spool(settings: Any, store: Any) -> Any:
    """The spool of ``sla_breach_events`` rows: a breach found while BigQuery is down is kept on
    this host and delivered by the next breach or the syncer's next round, like a run transition."""
    from customer_pipelines.runs.mirror import RunStateMirror

    class SlaBreachSpool(RunStateMirror):
        table = "sla_breach_events"

        def row_id(self, row: Any) -> str:
            return f"{row['run_key']}/sla"

        def row_time(self, row: Any) -> datetime:
            return row["detected_at"]

        def _stamp(self, row: dict[str, Any], now: str) -> None:
            pass

        def _revive_time(self, row: dict[str, Any]) -> None:
            row["detected_at"] = datetime.fromisoformat(row["detected_at"])

    return SlaBreachSpool(store, settings.spool_dir / "sla")


def _record(row: dict[str, Any]) -> None:
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.runs.failure_policy import Alert, notifier_from_settings
    from customer_pipelines.settings import get_settings

    settings = get_settings()
    sla_spool(settings, BigQueryStore(settings)).record(row)  # never raises: spooled if BigQuery fails
    notifier_from_settings(settings)(
        Alert(
            "SLA_BREACH",
            row["config_id"],
            row["customer_id"],
            0,
            f"run {row['run_key']} of {row['customer_id']} passed its {row['threshold_minutes']}-minute SLA",
        )
    )
