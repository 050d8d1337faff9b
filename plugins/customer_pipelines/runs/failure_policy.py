"""After N consecutive failed runs a config is paused (a new version with ``is_active=false`` in
BigQuery, with an audit row; its DAG is paused by the same sync round) and an alert is raised; a
warning is raised earlier.

Runs in the syncer, off the hot path: failures are read from the mirror's views, the pause is one
batched INSERT of new config versions per round (the configs table is append-only: no UPDATE).
Alerts go to the log and to a notifier users plug in with ``CP_ALERT_NOTIFIER=package.module:function``
(called with an ``Alert``); each alert is sent once per failure count."""

from __future__ import annotations

import importlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_pipelines.models import dag_id_for
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    level: str  # WARNING | PAUSED, or the kind of a fleet alert (runs/fleet_alerts.py)
    config_id: str
    customer_id: str
    consecutive_failures: int
    message: str
    state: str = "RAISED"
    """RAISED, or CLEARED when the condition of an alert raised earlier has ended (fleet alerts)."""


Notifier = Callable[[Alert], None]


def log_notifier(alert: Alert) -> None:
    if alert.state == "CLEARED":
        log.info("pipeline alert cleared: %s", alert.message)
        return
    (log.error if alert.level == "PAUSED" else log.warning)("pipeline alert: %s", alert.message)


def notifier_from_settings(settings: Settings) -> Notifier:
    if not settings.alert_notifier:
        return log_notifier
    module, _, name = settings.alert_notifier.partition(":")
    plugged: Notifier = getattr(importlib.import_module(module), name)

    def both(alert: Alert) -> None:
        log_notifier(alert)
        plugged(alert)

    return both


@dataclass
class PolicyResult:
    """DAG ids (``<customer_id>.<config_id>``): a config_id alone may belong to several customers."""

    paused: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


def apply_failure_policy(store: Any, settings: Settings, notifier: Notifier | None = None) -> PolicyResult:
    notifier = notifier or notifier_from_settings(settings)
    warn_at = min(settings.consecutive_failures_to_warn, settings.consecutive_failures_to_pause)
    since = datetime.now(UTC) - timedelta(hours=settings.failure_policy_lookback_hours)
    failing = store.query("queries/failing_configs.sql", {"warn_at": warn_at, "since": since})
    result = PolicyResult()
    to_pause = [r for r in failing if r["consecutive_failures"] >= settings.consecutive_failures_to_pause]
    if to_pause:
        store.query(
            "queries/auto_pause_configs.sql",
            {"dag_ids": [dag_id_for(r["customer_id"], r["config_id"]) for r in to_pause]},
        )
        now = datetime.now(UTC)
        store.load_rows(
            "pipeline_schedule_audit",
            [
                {
                    "audit_id": uuid.uuid4().hex,
                    "config_id": r["config_id"],
                    "customer_id": r["customer_id"],
                    "action": "AUTO_PAUSE",
                    "changed_by": "failure-policy",
                    "changed_at": now,
                    "old_value": {"is_active": True},
                    "new_value": {"is_active": False},
                    "reason": f"{r['consecutive_failures']} consecutive failed runs "
                    f"(limit {settings.consecutive_failures_to_pause})",
                }
                for r in to_pause
            ],
        )
    sent = _sent_alerts(settings)
    for row in failing:
        paused = row in to_pause
        level = "PAUSED" if paused else "WARNING"
        dag_id = dag_id_for(row["customer_id"], row["config_id"])
        key = f"{dag_id}:{level}:{row['consecutive_failures']}"
        (result.paused if paused else result.warned).append(dag_id)
        if key in sent:
            continue
        action = "paused" if paused else "will be paused at " + str(settings.consecutive_failures_to_pause)
        notifier(
            Alert(
                level,
                row["config_id"],
                row["customer_id"],
                row["consecutive_failures"],
                f"config {row['config_id']} of {row['customer_id']} failed "
                f"{row['consecutive_failures']} runs in a row: {action}",
            )
        )
        sent.add(key)
    _save_sent_alerts(settings, sent)
    return result


def _alerts_file(settings: Settings):
    return settings.state_dir / "alerts-sent.json"


def _sent_alerts(settings: Settings) -> set[str]:
    try:
        return set(json.loads(_alerts_file(settings).read_text()))
    except (OSError, ValueError):
        return set()


def _save_sent_alerts(settings: Settings, sent: set[str]) -> None:
    path = _alerts_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(sent)))
