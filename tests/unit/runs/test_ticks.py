"""The tick detector's cron arithmetic against Airflow's own timetable, and each tick's outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from customer_pipelines.fleet.sync import schedule_of
from customer_pipelines.runs.ticks import (
    Cause,
    Interval,
    Outcome,
    RunSeen,
    TickEvidence,
    account,
    expected_ticks,
    scheduler_outages,
)


def airflow_ticks(cron: str, timezone: str, since: datetime, until: datetime) -> list[datetime]:
    """The ticks Airflow's timetable gives a backfill of [since, until) (catchup=True)."""
    timetable = schedule_of(cron, timezone)
    restriction = TimeRestriction(earliest=pendulum.instance(since), latest=pendulum.instance(until), catchup=True)
    ticks: list[datetime] = []
    last: DataInterval | None = None
    while (info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)) is not None:
        if info.logical_date >= until:
            break
        ticks.append(datetime.fromtimestamp(info.logical_date.timestamp(), UTC))
        last = info.data_interval
    return ticks


SPRING_2026 = (datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
FALL_2026 = (datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))


@pytest.mark.parametrize("window", [SPRING_2026, FALL_2026], ids=["spring-forward", "fall-back"])
@pytest.mark.parametrize(
    ("cron", "timezone"),
    [
        ("30 2 * * *", "America/New_York"),
        ("30 1 * * *", "America/New_York"),
        ("*/30 * * * *", "America/New_York"),
        ("15 * * * *", "America/New_York"),
        ("0 */2 * * *", "Europe/Zurich"),
        ("30 2 * * *", "Australia/Lord_Howe"),
        ("0 9 * * 1-5", "Asia/Kolkata"),
    ],
)
def test_expected_ticks_match_airflows_timetable_across_dst_days(cron, timezone, window):
    since, until = window
    ours = expected_ticks(cron, timezone, since, until)
    assert ours == airflow_ticks(cron, timezone, since, until)
    assert ours  # the comparison is over real ticks


def test_two_thirty_in_new_york_fires_once_on_both_dst_days():
    spring = expected_ticks(
        "30 2 * * *", "America/New_York", datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 9, 5, tzinfo=UTC)
    )
    fall = expected_ticks(
        "30 2 * * *", "America/New_York", datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC)
    )
    # 02:30 does not exist on 8 March: it fires at 03:30 EDT; on 1 November it exists once (EST).
    assert spring == [datetime(2026, 3, 8, 7, 30, tzinfo=UTC)]
    assert fall == [datetime(2026, 11, 1, 7, 30, tzinfo=UTC)]


T0 = datetime(2026, 12, 1, tzinfo=UTC)


def hourly(n: int) -> list[datetime]:
    return [T0 + timedelta(hours=i) for i in range(n)]


def test_a_day_with_a_run_a_quota_skip_a_paused_tick_and_a_scheduler_outage_accounts_every_tick():
    ticks = hourly(5)
    evidence = TickEvidence(
        runs=[
            RunSeen(ticks[0], "scheduled__0", "scheduled", "success", started_at=ticks[0]),
            RunSeen(
                ticks[1], "scheduled__1", "scheduled", "success", started_at=ticks[1], skip_reason="QUOTA_EXCEEDED"
            ),
            RunSeen(ticks[4], "scheduled__4", "scheduled", "success", started_at=ticks[4]),
        ],
        holds=[Interval(ticks[2] - timedelta(minutes=5), ticks[2] + timedelta(minutes=5), Cause.CONFIG_PAUSED)],
        outages=[Interval(ticks[3] - timedelta(minutes=1), ticks[3] + timedelta(minutes=20), Cause.SCHEDULER_DOWN)],
    )
    records = account(ticks, evidence, now=T0 + timedelta(hours=6), late_after=timedelta(minutes=10))
    assert [(r.outcome, r.cause) for r in records] == [
        (Outcome.RAN, None),
        (Outcome.SKIPPED, "QUOTA_EXCEEDED"),
        (Outcome.SKIPPED, Cause.CONFIG_PAUSED),
        (Outcome.MISSED, Cause.SCHEDULER_DOWN),
        (Outcome.RAN, None),
    ]
    assert [r.missing for r in records] == [False, True, True, True, False]
    assert records[0].run_id == "scheduled__0"


def test_a_tick_without_run_or_cause_is_missed_with_no_run_once_a_later_tick_ran():
    ticks = hourly(3)
    evidence = TickEvidence(
        runs=[RunSeen(t, f"r{i}", "scheduled", "success", started_at=t) for i, t in enumerate(ticks) if i != 1]
    )
    records = account(ticks, evidence, now=T0 + timedelta(hours=3), late_after=timedelta(minutes=10))
    assert [(r.outcome, r.cause) for r in records][1] == (Outcome.MISSED, Cause.NO_RUN)


def test_the_newest_tick_without_a_run_is_late_after_the_threshold_and_due_before_it():
    ticks = hourly(2)
    evidence = TickEvidence(runs=[RunSeen(ticks[0], "r0", "scheduled", "success", started_at=ticks[0])])
    soon = account(ticks, evidence, now=ticks[1] + timedelta(minutes=5), late_after=timedelta(minutes=10))
    later = account(ticks, evidence, now=ticks[1] + timedelta(minutes=15), late_after=timedelta(minutes=10))
    assert soon[1].outcome is Outcome.DUE and not soon[1].missing
    assert (later[1].outcome, later[1].cause) == (Outcome.LATE, Cause.NOT_STARTED)


def test_a_queued_run_not_started_after_the_threshold_is_late_and_a_failed_run_is_missing():
    ticks = hourly(2)
    evidence = TickEvidence(
        runs=[
            RunSeen(ticks[0], "r0", "scheduled", "failed", started_at=ticks[0]),
            RunSeen(ticks[1], "r1", "scheduled", "queued"),
        ]
    )
    records = account(ticks, evidence, now=ticks[1] + timedelta(minutes=30), late_after=timedelta(minutes=10))
    assert (records[0].outcome, records[0].cause, records[0].missing) == (Outcome.RAN, Cause.RUN_FAILED, True)
    assert (records[1].outcome, records[1].cause) == (Outcome.LATE, Cause.NOT_STARTED)


def test_a_backfill_run_replaces_the_failed_run_of_its_tick():
    tick = T0
    evidence = TickEvidence(
        runs=[
            RunSeen(tick, "scheduled__x", "scheduled", "failed", started_at=tick),
            RunSeen(tick, "backfill__x", "backfill", "success", started_at=tick + timedelta(hours=1)),
        ]
    )
    [record] = account([tick], evidence, now=tick + timedelta(hours=2), late_after=timedelta(minutes=10))
    assert (record.outcome, record.run_type, record.missing) == (Outcome.RAN, "backfill", False)


def test_scheduler_outages_are_the_gaps_between_its_jobs():
    grace, lead = timedelta(seconds=30), timedelta(seconds=20)
    stopped = T0 + timedelta(minutes=10)
    jobs = [
        (T0, stopped - timedelta(seconds=3), stopped),  # stopped: covered to its end
        (T0 + timedelta(minutes=20), T0 + timedelta(minutes=60), None),  # running: its heartbeat + grace
    ]
    outages = scheduler_outages(jobs, T0, T0 + timedelta(hours=1), grace=grace, lead=lead)
    assert outages == [Interval(stopped - lead, T0 + timedelta(minutes=20), Cause.SCHEDULER_DOWN)]


def test_a_scheduler_killed_without_an_end_is_down_from_its_last_heartbeat_and_grace():
    grace = timedelta(seconds=30)
    jobs = [(T0, T0 + timedelta(minutes=5), None)]
    assert scheduler_outages(jobs, T0, T0 + timedelta(hours=1), grace=grace) == [
        Interval(T0 + timedelta(minutes=5, seconds=30), None, Cause.SCHEDULER_DOWN)
    ]
    assert scheduler_outages([], T0, T0 + timedelta(hours=1), grace=grace) == [Interval(T0, None, Cause.SCHEDULER_DOWN)]


def test_a_windowed_configs_tick_is_judged_from_its_start_and_its_run_is_matched_by_the_tick():
    """Issue 23: with a 25-minute offset the tick's run is due 25 minutes after the tick; it is not
    late before late_after has passed from then, and the next tick does not supersede it before the
    next tick's own run is due. Its run has the tick as logical date (and starts later)."""
    offset, late_after = timedelta(minutes=25), timedelta(minutes=10)
    ticks = hourly(2)
    first_ran = [RunSeen(ticks[0], "r0", "scheduled", "success", started_at=ticks[0] + offset)]
    evidence = TickEvidence(runs=first_ran)

    def outcome(now: datetime, runs: TickEvidence = evidence, *, with_offset: bool = True) -> list[tuple]:
        records = account(
            ticks,
            runs,
            now=now,
            late_after=late_after,
            next_tick=ticks[1] + timedelta(hours=1),
            start_offset=offset if with_offset else timedelta(0),
        )
        return [(r.outcome, r.cause) for r in records]

    assert outcome(ticks[1] + timedelta(minutes=30))[0] == (Outcome.RAN, None)  # matched by its tick
    assert outcome(ticks[1] + timedelta(minutes=30))[1] == (Outcome.DUE, None)  # due 25 min, not late yet
    assert outcome(ticks[1] + timedelta(minutes=36))[1] == (Outcome.LATE, Cause.NOT_STARTED)
    # the next tick has come but its own run is not due yet: the tick is still late, not missed
    assert outcome(ticks[1] + timedelta(minutes=70))[1] == (Outcome.LATE, Cause.NOT_STARTED)
    assert outcome(ticks[1] + timedelta(minutes=86))[1] == (Outcome.MISSED, Cause.NO_RUN)
    # the twin: without the offset the same moment is late already
    assert outcome(ticks[1] + timedelta(minutes=30), with_offset=False)[1] == (Outcome.LATE, Cause.NOT_STARTED)


def test_a_windowed_configs_tick_held_between_the_tick_and_its_start_is_skipped_not_missed():
    offset = timedelta(minutes=20)
    ticks = hourly(2)
    held = Interval(ticks[0] + timedelta(minutes=5), ticks[0] + timedelta(minutes=30), Cause.CONFIG_PAUSED)
    evidence = TickEvidence(
        runs=[RunSeen(ticks[1], "r1", "scheduled", "success", started_at=ticks[1] + offset)], holds=[held]
    )
    records = account(
        ticks, evidence, now=ticks[1] + timedelta(hours=1), late_after=timedelta(minutes=10), start_offset=offset
    )
    assert [(r.outcome, r.cause) for r in records] == [(Outcome.SKIPPED, Cause.CONFIG_PAUSED), (Outcome.RAN, None)]
