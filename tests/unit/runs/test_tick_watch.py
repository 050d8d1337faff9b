"""The syncer's tick check (runs/tick_watch.py) over rounds, on Airflow's records given as data: what
it alerts (TICK_MISSED once per tick, LATE_START once per episode), what it does not (a tick during
a scheduler outage, ticks before a config became runnable) and how little a later round reads."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.models import PipelineConfig
from customer_pipelines.runs.failure_policy import Alert
from customer_pipelines.runs.tick_history import FleetEvidence, Window, fleet_ticks
from customer_pipelines.runs.tick_watch import WATERMARK_MARGIN, TickWatch
from customer_pipelines.runs.ticks import Interval, Outcome, RunSeen
from customer_pipelines.settings import Settings


def at(hour: int, minute: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def config(config_id: str = "cfg_1", cron: str = "*/5 * * * *", timezone: str = "UTC") -> PipelineConfig:
    return PipelineConfig(
        config_id=config_id,
        customer_id="cust_a",
        provider="GCP",
        domain="COST",
        pipeline_template="cost_billing",
        schedule_cron=cron,
        timezone=timezone,
    )


class AirflowRecords:
    """Airflow's metadata database as data: the runs per DAG, the scheduler's outages, the paused
    DAGs; records each read's window and starts."""

    def __init__(self) -> None:
        self.runs: dict[str, list[RunSeen]] = {}
        self.outages: list[Interval] = []
        self.paused: set[str] = set()
        self.reads: list[tuple[Window, dict[str, datetime]]] = []

    def ran(self, dag_id: str, *ticks: datetime) -> None:
        self.runs.setdefault(dag_id, []).extend(
            RunSeen(tick, f"scheduled__{tick.isoformat()}", "scheduled", "success", started_at=tick) for tick in ticks
        )

    def read(self, session: object, window: Window, starts: Mapping[str, datetime]) -> FleetEvidence:
        self.reads.append((window, dict(starts)))
        runs = {
            dag_id: [r for r in self.runs.get(dag_id, []) if since <= r.logical_date < window.until]
            for dag_id, since in starts.items()
        }
        return FleetEvidence(runs, self.outages, self.paused & set(starts))


def every(minutes: int, since: datetime, until: datetime, *, but: tuple[datetime, ...] = ()) -> list[datetime]:
    ticks, tick = [], since
    while tick < until:
        if tick not in but:
            ticks.append(tick)
        tick += timedelta(minutes=minutes)
    return ticks


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path / "state", late_after_minutes=10, tick_check_hours=24)


@pytest.fixture
def airflow() -> AirflowRecords:
    return AirflowRecords()


@pytest.fixture
def alerts() -> list[Alert]:
    return []


@pytest.fixture
def watch(settings: Settings, airflow: AirflowRecords, alerts: list[Alert]) -> TickWatch:
    return TickWatch(settings, notifier=alerts.append, read=airflow.read)


def test_a_tick_missed_with_no_cause_alerts_once_across_two_rounds(watch, airflow, alerts):
    cfg = config(timezone="Europe/Zurich")
    anchors = {cfg.dag_id: at(9)}
    airflow.ran(cfg.dag_id, *every(5, at(9), at(10, 25), but=(at(10, 10),)))

    first = watch.check([cfg], anchors, session=None, now=at(10, 22))
    second = watch.check([cfg], anchors, session=None, now=at(10, 23))

    assert [record.tick for _, record in first.missed] == [at(10, 10)] and not first.late
    assert not second.missed  # still in the second round's window, not alerted again
    assert [a.level for a in alerts] == ["TICK_MISSED"]
    assert (alerts[0].config_id, alerts[0].customer_id) == ("cfg_1", "cust_a")
    message = alerts[0].message
    assert "cfg_1" in message and "2026-12-02 10:10 UTC" in message and "11:10 Europe/Zurich" in message
    assert "NO_RUN" in message


def test_a_tick_during_a_scheduler_outage_is_not_alerted_as_missed(watch, airflow, alerts):
    cfg = config()
    airflow.ran(cfg.dag_id, *every(5, at(9), at(10, 25), but=(at(10, 10),)))
    airflow.outages = [Interval(at(10, 8), at(10, 12), "SCHEDULER_DOWN")]

    found = watch.check([cfg], {cfg.dag_id: at(9)}, session=None, now=at(10, 22))

    assert not found.missed and not alerts


def test_a_late_episode_alerts_once_and_again_only_after_it_ended_and_a_new_one_began(watch, airflow, alerts):
    cfg = config(cron="0 * * * *")
    anchors = {cfg.dag_id: at(6)}
    airflow.ran(cfg.dag_id, at(6), at(7), at(8), at(9))

    began = watch.check([cfg], anchors, session=None, now=at(10, 15))  # 10:00 not started after 10 min
    still = watch.check([cfg], anchors, session=None, now=at(10, 16))  # 10:00 is behind the watermark now
    airflow.ran(cfg.dag_id, at(10, 0))
    ended = watch.check([cfg], anchors, session=None, now=at(10, 20))
    assert watch.late == set()  # the episode ended: 10:00 started
    again = watch.check([cfg], anchors, session=None, now=at(11, 15))  # 11:00 not started: a new episode

    assert [record.tick for _, record in began.late] == [at(10)]
    assert not still.late and not ended.late
    assert [record.tick for _, record in again.late] == [at(11)]
    assert [a.level for a in alerts] == ["LATE_START", "LATE_START"]
    assert "2026-12-02 10:00 UTC" in alerts[0].message and "NOT_STARTED" in alerts[0].message


def test_a_late_tick_carried_across_rounds_is_alerted_missed_once_the_next_tick_ran(watch, airflow, alerts):
    cfg = config(cron="0 * * * *")
    anchors = {cfg.dag_id: at(6)}
    airflow.ran(cfg.dag_id, at(6), at(7), at(8), at(9))

    watch.check([cfg], anchors, session=None, now=at(10, 15))
    watch.check([cfg], anchors, session=None, now=at(10, 40))
    assert watch.pending == {cfg.dag_id: at(10)}  # behind the watermark but still late: read again
    airflow.ran(cfg.dag_id, at(11))
    found = watch.check([cfg], anchors, session=None, now=at(11, 5))

    assert [record.tick for _, record in found.missed] == [at(10)]
    assert [a.level for a in alerts] == ["LATE_START", "TICK_MISSED"]
    assert watch.pending == {} and not watch.late


def test_ticks_before_runnable_since_are_not_counted(settings, watch, airflow, alerts):
    created = config("created_at_10_01")
    unanchored = config("not_anchored_yet")
    anchors = {created.dag_id: at(10, 1)}
    airflow.ran(created.dag_id, *every(5, at(10, 5), at(10, 25)))

    results = fleet_ticks(
        [created, unanchored],
        Window(at(9), at(10, 22)),
        None,
        settings=settings,
        now=at(10, 22),
        anchors=anchors,
        read=airflow.read,
    )
    found = watch.check([created, unanchored], anchors, session=None, now=at(10, 22))

    assert [r.config.config_id for r in results] == ["created_at_10_01"]  # no anchor: its DAG fires no tick
    assert [record.tick for record in results[0].records] == every(5, at(10, 5), at(10, 25))
    assert {record.outcome for record in results[0].records} == {Outcome.RAN}
    assert not found.missed and not found.late and not alerts


def test_later_rounds_read_only_from_the_previous_rounds_final_ticks(settings, watch, airflow):
    cfg = config()
    anchors = {cfg.dag_id: at(0, day=1)}
    airflow.ran(cfg.dag_id, *every(5, at(0, day=1), at(10, 25)))

    watch.check([cfg], anchors, session=None, now=at(10, 22))
    watch.check([cfg], anchors, session=None, now=at(10, 23))

    (first, _), (second, starts) = airflow.reads
    assert first.since == at(10, 22) - timedelta(hours=settings.tick_check_hours)
    assert second.since == at(10, 22) - timedelta(minutes=settings.late_after_minutes) - WATERMARK_MARGIN
    assert starts == {cfg.dag_id: second.since}
