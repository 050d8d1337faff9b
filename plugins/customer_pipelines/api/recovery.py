"""Missed runs and backfills for the API: a thin layer over runs/tick_history and runs/backfills,
with the API's checks (the customer's configs, what may run now, the quota outlook)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from customer_pipelines.airflow_db import metadata_session
from customer_pipelines.api.errors import ApiError, invalid
from customer_pipelines.models import PipelineConfig, hold_reason
from customer_pipelines.runs.backfills import (
    BackfillRefused,
    backfill_share,
    backfill_status,
    cancel_backfill,
    check_window,
    create_backfills,
    plan_backfill,
)
from customer_pipelines.runs.tick_history import Window, fleet_ticks, tick_history
from customer_pipelines.runs.ticks import expected_ticks
from customer_pipelines.settings import Settings

MAX_WINDOW = timedelta(days=31)
"""The longest window of a tick history or missed-runs report."""
MAX_BACKFILL_RUNS = 1000
"""The most ticks one backfill request may cover per config (split longer recoveries)."""


class Recovery:
    def __init__(self, services: Any) -> None:
        self.services = services
        self.settings: Settings = services.settings

    def _configs(self, customer_id: str, config_ids: list[str] | None) -> list[PipelineConfig]:
        snapshot = self.services.snapshots.get()
        rows = {r.config_id: r for r in snapshot.configs_of_customer(customer_id)}
        wanted = config_ids if config_ids is not None else sorted(rows)
        configs = []
        for config_id in wanted:
            row = rows.get(config_id)
            if row is None:
                raise ApiError(404, f"config {config_id} of customer {customer_id} not found")
            try:
                configs.append(PipelineConfig.model_validate(row.row))
            except ValidationError:
                if config_ids is not None:
                    raise ApiError(409, f"config {config_id} is invalid and has no DAG") from None
        return configs

    @staticmethod
    def _window(since: datetime | None, until: datetime | None) -> Window:
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise invalid(name, "needs a timezone (e.g. 2026-12-01T00:00:00Z)")
        until = until or datetime.now(UTC)
        if until < datetime(2000, 1, 1, tzinfo=UTC):
            raise invalid("until", "is before 2000")
        since = since or until - timedelta(days=1)
        if since >= until:
            raise invalid("since", "must be before 'until'")
        if until - since > MAX_WINDOW:
            raise invalid("since", f"the window is at most {MAX_WINDOW.days} days")
        return Window(since.astimezone(UTC), until.astimezone(UTC))

    def ticks(self, customer_id: str, config_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        self.services.customer(customer_id)
        window = self._window(since, until)
        [found] = tick_history(
            self._configs(customer_id, [config_id]), window, settings=self.settings, store=self.services.store
        )
        return {
            "customer_id": customer_id,
            "config_id": config_id,
            "schedule_cron": found.config.schedule_cron,
            "timezone": found.config.timezone,
            "since": window.since.isoformat(),
            "until": window.until.isoformat(),
            "counts": found.counts(),
            "ticks": [r.as_dict() for r in found.records],
        }

    def missed(self, customer_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        self.services.customer(customer_id)
        window = self._window(since, until)
        history = tick_history(
            self._configs(customer_id, None), window, settings=self.settings, store=self.services.store
        )
        configs = []
        for found in history:
            missing = found.missing()
            if missing:
                configs.append(
                    {
                        "config_id": found.config.config_id,
                        "missing": len(missing),
                        "causes": _count(r.cause for r in missing),
                        "ticks": [r.as_dict() for r in missing],
                    }
                )
        return {
            "customer_id": customer_id,
            "since": window.since.isoformat(),
            "until": window.until.isoformat(),
            "missing": sum(c["missing"] for c in configs),
            "configs": configs,
        }

    def fleet_missed(self, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        """Operators: per customer, the runnable configs' ticks without a run, by cause, from
        Airflow's metadata database alone (no BigQuery; holds are the configs' current state)."""
        from customer_pipelines.fleet.sync import Fleet

        window = self._window(since, until)
        snapshot = self.services.snapshots.get()
        fleet = Fleet.of(snapshot)
        anchors = {dag_id: anchor for dag_id, (anchor, _) in snapshot.anchors().items()}
        runnable = [c for c in fleet.configs if fleet.is_runnable(c)]
        with metadata_session(self.settings) as session:
            found = fleet_ticks(
                runnable, window, session, settings=self.settings, now=datetime.now(UTC), anchors=anchors
            )
        customers: dict[str, dict[str, Any]] = {}
        for config_ticks in found:
            missing = config_ticks.missing()
            if not missing:
                continue
            entry = customers.setdefault(config_ticks.config.customer_id, {"missing": 0, "configs": 0, "causes": {}})
            entry["missing"] += len(missing)
            entry["configs"] += 1
            for cause, count in _count(r.cause for r in missing).items():
                entry["causes"][cause] = entry["causes"].get(cause, 0) + count
        ranked = sorted(customers.items(), key=lambda item: (-item[1]["missing"], item[0]))
        return {
            "since": window.since.isoformat(),
            "until": window.until.isoformat(),
            "configs_checked": len(runnable),
            "missing": sum(c["missing"] for c in customers.values()),
            "customers": [{"customer_id": customer_id, **entry} for customer_id, entry in ranked],
        }

    def backfill(self, caller: Any, customer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        customer = self.services.customer(customer_id)
        counted = body.get("count_against_quota", True)
        if not counted and caller.is_api_key:
            raise ApiError(
                403,
                "count_against_quota: only an operator may exempt a backfill from the quota",
                extra={"field": "count_against_quota"},
            )
        try:
            check_window(body["from_"], body["to"], body.get("reprocess_behavior", "none"))
        except BackfillRefused as exc:
            raise invalid(exc.field, exc.reason) from None
        configs = self._configs(customer_id, body.get("config_ids"))
        held = [(c.config_id, reason) for c in configs if (reason := hold_reason(c, customer)) is not None]
        if body.get("config_ids") is None:
            configs = [c for c in configs if hold_reason(c, customer) is None]
        elif held:
            # Airflow starts no run of a paused DAG, so the backfill would sit queued: refused instead.
            config_id, reason = held[0]
            raise ApiError(
                409,
                f"config {config_id} cannot run now ({reason.value}): enable it (or reactivate the customer) first",
                extra={"reason": reason.value},
            )
        if not configs:
            raise ApiError(409, f"customer {customer_id} has no config that can run now")
        for config in configs:
            ticks = expected_ticks(
                config.schedule_cron, config.timezone, body["from_"], body["to"], limit=MAX_BACKFILL_RUNS + 1
            )
            if len(ticks) > MAX_BACKFILL_RUNS:
                raise invalid(
                    "to", f"config {config.config_id} has more than {MAX_BACKFILL_RUNS} ticks in the window: split it"
                )
        today = datetime.now(UTC).date()
        used_today, _ = self.services.ledger.usage(customer_id, today, today.replace(day=1))
        remaining = None if customer.daily_run_limit is None else max(0, customer.daily_run_limit - used_today)
        try:
            with metadata_session(self.settings) as session:
                plan = plan_backfill(
                    session,
                    customer_id,
                    configs,
                    body["from_"],
                    body["to"],
                    reprocess_behavior=body.get("reprocess_behavior", "none"),
                    quota_remaining_today=remaining if counted else None,
                )
                if not body.get("dry_run"):
                    if plan.runs == 0:
                        raise ApiError(
                            409, "nothing to backfill: every tick of the window has a run", extra=plan.as_dict()
                        )
                    if not counted:  # before the runs exist: the first may start at once
                        self._exempt(plan, caller)
                    create_backfills(
                        session,
                        plan,
                        max_active_runs=backfill_share(
                            customer.max_concurrent_runs, self.settings.backfill_max_active_runs
                        ),
                        triggering_user=caller.audit_name,
                    )
        except BackfillRefused as exc:
            if exc.status == 422:
                raise invalid(exc.field, exc.reason) from None
            raise ApiError(exc.status, str(exc)) from None
        if not counted and not body.get("dry_run"):
            self._exempt(plan, caller)  # again, now with the backfills' ids
        result = {**plan.as_dict(), "dry_run": bool(body.get("dry_run")), "count_against_quota": counted}
        if not body.get("dry_run"):
            for planned in plan.configs:
                if planned.config_id in plan.created:
                    self.services.audit(caller, customer_id, planned.config_id, "BACKFILL", None, result, None)
        return result

    def _exempt(self, plan: Any, caller: Any) -> None:
        """Record the operator's decision: the plan's ticks take no quota unit when backfilled."""
        from customer_pipelines.runs.quota import QuotaExemptions

        exemptions = QuotaExemptions(self.settings)
        for planned in plan.configs:
            if planned.ticks:
                exemptions.record(
                    planned.dag_id,
                    planned.ticks,
                    backfill_id=plan.created.get(planned.config_id),
                    decided_by=caller.audit_name,
                )

    def _own_backfill(self, customer_id: str, backfill_id: int, session: Any) -> dict[str, Any]:
        status = backfill_status(session, backfill_id)
        snapshot = self.services.snapshots.get()
        if status is None or not any(r.dag_id == status["dag_id"] for r in snapshot.configs_of_customer(customer_id)):
            # Another customer's backfill is "not found" too: nothing tells a caller it exists.
            raise ApiError(404, f"backfill {backfill_id} of customer {customer_id} not found")
        return status

    def backfill_status(self, customer_id: str, backfill_id: int) -> dict[str, Any]:
        self.services.customer(customer_id)
        with metadata_session(self.settings) as session:
            return self._own_backfill(customer_id, backfill_id, session)

    def cancel(self, caller: Any, customer_id: str, backfill_id: int) -> dict[str, Any]:
        self.services.customer(customer_id)
        with metadata_session(self.settings) as session:
            status = self._own_backfill(customer_id, backfill_id, session)
            if status["completed_at"] is not None:
                raise ApiError(409, f"backfill {backfill_id} has already ended", extra=status)
            result = cancel_backfill(session, backfill_id)
        self.services.audit(caller, customer_id, None, "BACKFILL_CANCEL", None, result, None)
        return result or status


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
