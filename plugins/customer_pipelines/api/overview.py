"""The operators' view of the fleet, by customer: what the fleet page (ui/) shows and the REST API's
``GET /fleet/customers`` returns, from the same services (the snapshot, the quota ledger, Airflow's
database, the mirror's views in BigQuery, the syncer's fleet alerts).

Every figure is read for all customers at once (a handful of reads, whatever the fleet's size) and
kept for ``TTL_SECONDS``, so a page view of 10,000 customers costs no more than one of ten; the
schedule figures are computed once per distinct (cron, timezone, start offset), of which a fleet has
few."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from customer_pipelines.fleet.sync import Fleet, schedule_of
from customer_pipelines.models import pool_name_for

if TYPE_CHECKING:
    from customer_pipelines.api.service import Services

TTL_SECONDS = 30.0
HOURS_AHEAD = 24
DAYS_BACK = 7
PAGE_SIZE = 50


def _safe(read: Callable[[], Any], default: Any, problems: list[str], what: str) -> Any:
    """A source that cannot be read leaves its figures out (named in ``problems``), not the page."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - shown on the page instead
        problems.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
        return default


@dataclass(frozen=True)
class _Figures:
    at: datetime
    fleet: Fleet
    generation: int
    used_today: dict[str, int]
    used_month: dict[str, int]
    pools: dict[str, tuple[int, int]]
    paused: set[str]
    failing: dict[str, tuple[int, int]]
    breaches: dict[str, int]
    due_next_hour: Counter[str]
    runs_per_hour: list[int]
    problems: list[str]


class FleetOverview:
    def __init__(self, services: Services, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.services = services
        self.clock = clock
        self._lock = threading.Lock()
        self._figures: tuple[float, _Figures] | None = None
        self._fleet: tuple[int, Fleet] | None = None

    # -- reads ----------------------------------------------------------------------------------

    def _read(self) -> _Figures:
        services = self.services
        now = self.clock()
        problems: list[str] = []
        snapshot = services.snapshots.get()
        # Parsed once per generation: at 50,000 configs parsing is seconds, and most reads find none new.
        if self._fleet is None or self._fleet[0] != snapshot.generation:
            self._fleet = (snapshot.generation, Fleet.of(snapshot))
        fleet = self._fleet[1]
        today = now.date()
        used_today, used_month = _safe(
            lambda: services.ledger.usage_by_customer(today, today.replace(day=1)), ({}, {}), problems, "quota ledger"
        )
        pools = _safe(lambda: services.airflow.pools_in_use(services.settings.pool_prefix), {}, problems, "pools")
        paused = _safe(services.airflow.paused_dags, set(), problems, "paused DAGs")
        failing = _safe(
            lambda: {
                r["customer_id"]: (int(r["failing_configs"]), int(r["longest_streak"]))
                for r in services.store.query("queries/fleet_failing_configs.sql")
            },
            {},
            problems,
            "failing configs",
        )
        breaches = _safe(
            lambda: {
                r["customer_id"]: int(r["sla_breaches"])
                for r in services.store.query("queries/fleet_sla_breaches_today.sql")
            },
            {},
            problems,
            "SLA breaches",
        )
        due, per_hour = _schedule_figures(fleet, now)
        return _Figures(
            now,
            fleet,
            snapshot.generation,
            used_today,
            used_month,
            pools,
            paused,
            failing,
            breaches,
            due,
            per_hour,
            problems,
        )

    def figures(self) -> _Figures:
        with self._lock:
            if self._figures is None or time.monotonic() - self._figures[0] > TTL_SECONDS:
                self._figures = (time.monotonic(), self._read())
            return self._figures[1]

    # -- what the page and the API show --------------------------------------------------------

    def customers(self, query: str = "", offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
        """Customers whose id or company name contains ``query`` (any case), by id, a page of them."""
        figures = self.figures()
        wanted = query.strip().lower()
        matching = sorted(
            customer_id
            for customer_id, customer in figures.fleet.customers.items()
            if not wanted or wanted in customer_id.lower() or wanted in customer.company_name.lower()
        )
        configs_of: dict[str, list[str]] = {}
        for config in figures.fleet.configs:
            configs_of.setdefault(config.customer_id, []).append(config.dag_id)
        rows = [self._row(figures, customer_id, configs_of.get(customer_id, [])) for customer_id in matching]
        return {
            "as_of": figures.at.isoformat(),
            "query": query,
            "total": len(rows),
            "offset": offset,
            "limit": limit,
            "customers": rows[offset : offset + limit],
            "problems": figures.problems,
        }

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        figures = self.figures()
        if customer_id not in figures.fleet.customers:
            return None
        configs = [c for c in figures.fleet.configs if c.customer_id == customer_id]
        row = self._row(figures, customer_id, [c.dag_id for c in configs])
        row["configs"] = [
            {
                "config_id": c.config_id,
                "dag_id": c.dag_id,
                "schedule": c.schedule_cron,
                "timezone": c.timezone,
                "active": c.is_active,
                "paused_in_airflow": c.dag_id in figures.paused,
                "runnable": figures.fleet.is_runnable(c),
            }
            for c in sorted(configs, key=lambda c: c.config_id)
        ]
        return row

    def fleet(self) -> dict[str, Any]:
        from customer_pipelines.runs.fleet_alerts import AlertEpisodes
        from customer_pipelines.runs.mirror import RunStateMirror

        figures = self.figures()
        services = self.services
        mirror = RunStateMirror(services.store, services.settings.spool_dir)
        return {
            "as_of": figures.at.isoformat(),
            "customers": len(figures.fleet.customers),
            "configs": len(figures.fleet.configs),
            "snapshot_generation": figures.generation,
            "mirror_backlog": mirror.backlog(),
            "mirror_lag_seconds": round(mirror.lag_seconds(self.clock()), 1),
            "mirror_rejected": mirror.rejected(),
            "due_next_hour": sum(figures.due_next_hour.values()),
            "runs_per_hour_next_24h": [
                {"hour": (_hour(figures.at) + timedelta(hours=n)).isoformat(), "runs": count}
                for n, count in enumerate(figures.runs_per_hour)
            ],
            "success_by_day": self.success_by_day(),
            "alerts": [
                {"key": key, **episode}
                for key, episode in sorted(AlertEpisodes(services.settings.state_dir).open().items())
            ],
            "problems": figures.problems,
        }

    def success_by_day(self, customer_id: str = "") -> list[dict[str, Any]]:
        """Finished runs and the success rate per day, the last 7 days (of one customer, or all)."""
        figures = self.figures()
        outcomes = _safe(
            lambda: self.services.store.query("queries/fleet_outcomes_by_day.sql", {"customer_id": customer_id}),
            [],
            figures.problems,
            "run outcomes",
        )
        return _by_day(outcomes, figures.at.date())

    def _row(self, figures: _Figures, customer_id: str, dag_ids: list[str]) -> dict[str, Any]:
        customer = figures.fleet.customers[customer_id]
        running, slots = figures.pools.get(pool_name_for(customer_id, self.services.settings.pool_prefix), (0, 0))
        failing, streak = figures.failing.get(customer_id, (0, 0))
        return {
            "customer_id": customer_id,
            "company_name": customer.company_name,
            "plan": customer.plan.value if customer.plan else None,
            "status": customer.status.value,
            "quota_today": {"used": figures.used_today.get(customer_id, 0), "limit": customer.daily_run_limit},
            "quota_month": {"used": figures.used_month.get(customer_id, 0), "limit": customer.monthly_run_limit},
            "concurrency": {"running": running, "limit": customer.max_concurrent_runs, "pool_slots": slots},
            "configs": len(dag_ids),
            "paused_configs": sum(dag_id in figures.paused for dag_id in dag_ids),
            "failing_configs": failing,
            "longest_failure_streak": streak,
            "due_next_hour": figures.due_next_hour.get(customer_id, 0),
            "sla_breaches_today": figures.breaches.get(customer_id, 0),
        }


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _schedule_figures(fleet: Fleet, now: datetime) -> tuple[Counter[str], list[int]]:
    """Runs starting within the hour, per customer, and runs starting in each of the next 24 clock
    hours (the burst profile of the fleet's crons), from the runnable configs' own timetables."""
    groups: dict[tuple[str, str, timedelta], list[str]] = {}
    for config in fleet.configs:
        if fleet.is_runnable(config):
            groups.setdefault((config.schedule_cron, config.timezone, config.start_offset), []).append(
                config.customer_id
            )
    due: Counter[str] = Counter()
    per_hour = [0] * HOURS_AHEAD
    first_hour = _hour(now)
    end = first_hour + timedelta(hours=HOURS_AHEAD)
    for (cron, timezone, offset), customers in groups.items():
        schedule = schedule_of(cron, timezone)
        moment = now - offset
        while True:
            tick = schedule.next_tick(moment)
            starts = datetime.fromtimestamp(tick.timestamp(), UTC) + offset
            if starts >= end:
                break
            if starts >= now:
                per_hour[int((starts - first_hour).total_seconds() // 3600)] += len(customers)
                if starts <= now + timedelta(hours=1):
                    due.update(customers)
            moment = datetime.fromtimestamp(tick.timestamp(), UTC) + timedelta(seconds=1)
    return due, per_hour


def _by_day(rows: list[dict[str, Any]], today: date) -> list[dict[str, Any]]:
    found = {str(r["day"]): (int(r["completed"]), int(r["failed"])) for r in rows}
    days = [today - timedelta(days=n) for n in range(DAYS_BACK - 1, -1, -1)]
    out = []
    for day in days:
        completed, failed = found.get(day.isoformat(), (0, 0))
        finished = completed + failed
        out.append(
            {
                "day": day.isoformat(),
                "completed": completed,
                "failed": failed,
                "success_rate": round(completed / finished, 4) if finished else None,
            }
        )
    return out
