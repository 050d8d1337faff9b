"""fleet/timetables.py: a customer DAG's ticks, anchored where the config became runnable.

Successive parses of the fleet file ask the timetable for the next run at different moments; these
tests ask it the way the DAG processor does (next_dagrun_info, catchup=False, Airflow's utcnow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from customer_pipelines.fleet.timetables import CustomerCronTimetable

NO_RESTRICTION = TimeRestriction(earliest=None, latest=None, catchup=False)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):
    """clock(moment): Airflow's utcnow (as the timetable reads it) answers ``moment``."""

    def set_now(moment: datetime) -> None:
        monkeypatch.setattr("airflow.timetables.trigger.utcnow", lambda: pendulum.instance(moment))

    return set_now


def _next_run(timetable: CustomerCronTimetable, last: DataInterval | None = None) -> datetime | None:
    info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=NO_RESTRICTION)
    return info.run_after if info else None


def test_a_new_dags_first_tick_is_the_same_at_every_parse_before_and_after_it_passes(clock):
    # Created at 10:00 with "0 2 * * *": its first run is 02:00 the next day, whether the scheduler
    # creates that run at 02:00:01 or an hour later; the DAG processor re-asks at every parse.
    timetable = CustomerCronTimetable("0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 12, 1, 10, tzinfo=UTC))
    tick = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    parses = [
        datetime(2026, 12, 1, 10, 0, 15, tzinfo=UTC),
        datetime(2026, 12, 2, 1, 59, 59, tzinfo=UTC),
        tick,
        tick + timedelta(seconds=15),
        tick + timedelta(minutes=3),
        tick + timedelta(hours=5),
        datetime(2026, 12, 2, 23, 59, tzinfo=UTC),
    ]
    seen = []
    for moment in parses:
        clock(moment)
        seen.append(_next_run(timetable))
    assert seen == [tick] * len(parses)


def test_the_first_tick_is_never_one_from_before_the_config_became_runnable(clock):
    clock(datetime(2026, 12, 2, 2, 0, 30, tzinfo=UTC))
    just_after = CustomerCronTimetable(
        "0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 12, 2, 2, 0, 1, tzinfo=UTC)
    )
    assert _next_run(just_after) == datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    at_the_tick = CustomerCronTimetable(
        "0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 12, 2, 2, tzinfo=UTC)
    )
    assert _next_run(at_the_tick) == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def test_a_config_that_must_not_run_has_no_next_run(clock):
    clock(datetime(2026, 12, 2, 12, tzinfo=UTC))
    assert _next_run(CustomerCronTimetable("*/5 * * * *", timezone="UTC", runnable_since=None)) is None


def test_after_a_run_the_next_tick_follows_it_and_a_manual_unpause_runs_the_latest_missed_tick_once(clock):
    timetable = CustomerCronTimetable("0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 11, 1, tzinfo=UTC))
    last = DataInterval(datetime(2026, 11, 20, 2, tzinfo=UTC), datetime(2026, 11, 20, 2, tzinfo=UTC))
    clock(datetime(2026, 11, 20, 2, 5, tzinfo=UTC))
    assert _next_run(timetable, last) == datetime(2026, 11, 21, 2, tzinfo=UTC)
    # Paused by a person for ten days, then unpaused: Airflow's catchup=False, the latest tick once.
    clock(datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert _next_run(timetable, last) == datetime(2026, 11, 30, 2, tzinfo=UTC)


def test_a_dag_start_date_restriction_still_applies(clock):
    clock(datetime(2026, 12, 1, tzinfo=UTC))
    timetable = CustomerCronTimetable("0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 11, 1, tzinfo=UTC))
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=datetime(2099, 1, 1, 5, tzinfo=UTC), latest=None, catchup=False),
    )
    assert info is not None and info.run_after == datetime(2099, 1, 2, 2, tzinfo=UTC)


def test_the_first_tick_is_dst_correct_in_the_configs_timezone(clock):
    # Runnable on the US spring-forward day before 02:30 local, which does not exist that day:
    # Airflow runs it at 03:30 EDT (07:30Z), and the anchor does not change that.
    timetable = CustomerCronTimetable(
        "30 2 * * *", timezone="America/New_York", runnable_since=datetime(2026, 3, 8, 5, tzinfo=UTC)
    )
    clock(datetime(2026, 3, 8, 5, 1, tzinfo=UTC))
    assert _next_run(timetable) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize("since", [datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC), None])
def test_serialisation_keeps_the_anchor(since):
    timetable = CustomerCronTimetable("0 2 * * *", timezone="Europe/Berlin", runnable_since=since)
    # (Airflow's own encoder also needs the plugin registered: the e2e stack proves that path.)
    back = CustomerCronTimetable.deserialize(timetable.serialize())
    assert back.runnable_since == since
    assert back._expression == "0 2 * * *" and back._timezone.name == "Europe/Berlin"


def test_next_tick_after_is_the_schedulers_tick():
    timetable = CustomerCronTimetable("0 2 * * *", timezone="Europe/Berlin")
    # 25 October 2026, Berlin falls back at 03:00 CEST: 02:00 happens at 00:00Z and again at 01:00Z;
    # Airflow's cron arithmetic runs it once, at 01:00Z.
    assert timetable.next_tick(datetime(2026, 10, 24, 23, tzinfo=UTC)) == datetime(2026, 10, 25, 1, tzinfo=UTC)


def _backfill_ticks(timetable: CustomerCronTimetable, earliest: datetime, latest: datetime) -> list[datetime]:
    """The ticks a backfill of [earliest, latest] creates runs for, asked the way Airflow 3.3's
    SerializedDAG.iter_dagrun_infos_between asks (next_dagrun_info_v2, catchup=True)."""
    restriction = TimeRestriction(earliest, latest, catchup=True)
    ticks, info = [], None
    while info := timetable.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction):
        ticks.append(info.run_after)
    return ticks


@pytest.mark.parametrize("runnable_since", [datetime(2026, 12, 5, 9, tzinfo=UTC), None], ids=["re-enabled", "held"])
def test_a_backfill_recovers_the_ticks_missed_before_the_anchor_while_the_scheduler_never_runs_them(
    clock, runnable_since
):
    # Off from 1 to 5 December, re-enabled on the 5th at 09:00 (or still held): the scheduler's
    # next run is after the anchor (or none), and a backfill of 1-4 December gets its four ticks.
    clock(datetime(2026, 12, 5, 9, 30, tzinfo=UTC))
    timetable = CustomerCronTimetable("0 2 * * *", timezone="UTC", runnable_since=runnable_since)
    expected_next = datetime(2026, 12, 6, 2, tzinfo=UTC) if runnable_since else None
    assert _next_run(timetable) == expected_next

    missed = _backfill_ticks(timetable, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 4, 23, 59, tzinfo=UTC))

    assert missed == [datetime(2026, 12, day, 2, tzinfo=UTC) for day in (1, 2, 3, 4)]


def _hourly(k: int) -> CustomerCronTimetable:
    return CustomerCronTimetable(
        "0 * * * *", timezone="UTC", runnable_since=datetime(2026, 12, 1, tzinfo=UTC), auto_backfill_ticks=k
    )


def _interval_at(tick: datetime) -> DataInterval:
    return DataInterval(pendulum.instance(tick), pendulum.instance(tick))


def test_after_an_outage_the_scheduler_runs_the_k_latest_missed_ticks_in_order_then_carries_on(clock):
    # Last run 03:00; the scheduler is back at 09:30: ticks 04:00 .. 09:00 were missed.
    last = datetime(2026, 12, 1, 3, tzinfo=UTC)
    clock(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    timetable = _hourly(3)
    runs = []
    for _ in range(4):
        runs.append(_next_run(timetable, _interval_at(last)))
        last = runs[-1]
    hour = [datetime(2026, 12, 1, h, tzinfo=UTC) for h in (7, 8, 9, 10)]
    assert runs == hour  # 07:00, 08:00, 09:00 (the three latest missed), then the next tick


def test_without_the_policy_only_the_latest_missed_tick_runs(clock):
    clock(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert _next_run(_hourly(0), _interval_at(datetime(2026, 12, 1, 3, tzinfo=UTC))) == datetime(
        2026, 12, 1, 9, tzinfo=UTC
    )


def test_the_policy_changes_nothing_when_no_tick_was_missed_and_never_reaches_before_the_anchor(clock):
    clock(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    on_time = _next_run(_hourly(5), _interval_at(datetime(2026, 12, 1, 9, tzinfo=UTC)))
    assert on_time == datetime(2026, 12, 1, 10, tzinfo=UTC)
    anchored = CustomerCronTimetable(
        "0 * * * *", timezone="UTC", runnable_since=datetime(2026, 12, 1, 8, 30, tzinfo=UTC), auto_backfill_ticks=5
    )
    assert _next_run(anchored, _interval_at(datetime(2026, 12, 1, 3, tzinfo=UTC))) == datetime(
        2026, 12, 1, 9, tzinfo=UTC
    )


def test_the_policy_survives_serialisation():
    timetable = _hourly(4)
    again = CustomerCronTimetable.deserialize(timetable.serialize())
    assert again.auto_backfill_ticks == 4
    assert (
        CustomerCronTimetable.deserialize({**timetable.serialize(), "auto_backfill_ticks": None}).auto_backfill_ticks
        == 0
    )


@pytest.mark.parametrize(
    ("cron", "timezone"),
    [
        ("0 2 * * *", "UTC"),
        ("*/15 9-17 * * 1-5", "Europe/Paris"),
        ("0 0 1,15 * 3", "America/New_York"),
        ("@daily", "UTC"),
    ],
)
def test_a_timetable_from_the_shared_cron_part_equals_one_airflow_builds_afresh(clock, cron, timezone):
    """The expansion check and description are computed once per (cron, timezone) and shared."""
    from airflow._shared.timezones.timezone import parse_timezone

    clock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))  # a DST change in Europe the next night
    since = datetime(2026, 3, 28, 11, 0, tzinfo=UTC)
    shared = [CustomerCronTimetable(cron, timezone=timezone, runnable_since=since) for _ in range(2)]
    fresh = CustomerCronTimetable(cron, timezone=parse_timezone(timezone), runnable_since=since)  # Airflow's own path

    for timetable in shared:
        assert timetable.serialize() == fresh.serialize()
        assert timetable.description == fresh.description and timetable.description
        assert _next_run(timetable) == _next_run(fresh)
    assert shared[0].runnable_since == since and shared[0] is not shared[1]


# -- start windows (issue 23) ----------------------------------------------------------------------


def test_a_windowed_configs_run_is_due_at_its_offset_after_the_tick_and_keeps_the_tick_as_logical_date(clock):
    offset = timedelta(minutes=7, seconds=13)
    timetable = CustomerCronTimetable(
        "0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 12, 1, 10, tzinfo=UTC), start_offset=offset
    )
    tick = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    infos = []
    # parses before the tick, between the tick and the start, and after the start: one answer
    for moment in (tick - timedelta(hours=3), tick + timedelta(minutes=3), tick + offset + timedelta(minutes=1)):
        clock(moment)
        infos.append(timetable.next_dagrun_info(last_automated_data_interval=None, restriction=NO_RESTRICTION))
    assert {(i.run_after, i.logical_date, i.data_interval.end) for i in infos} == {(tick + offset, tick, tick)}
    # after that run, the next tick's run is due at the same offset after it
    clock(tick + offset + timedelta(minutes=2))
    following = timetable.next_dagrun_info(
        last_automated_data_interval=infos[0].data_interval, restriction=NO_RESTRICTION
    )
    assert (following.run_after, following.logical_date) == (
        tick + timedelta(days=1) + offset,
        tick + timedelta(days=1),
    )


def test_without_a_window_the_run_is_due_at_its_tick_and_serialises_as_before(clock):
    clock(datetime(2026, 12, 2, 1, tzinfo=UTC))
    plain = CustomerCronTimetable("0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 12, 1, 12, tzinfo=UTC))
    info = plain.next_dagrun_info(last_automated_data_interval=None, restriction=NO_RESTRICTION)
    assert info.run_after == info.logical_date == datetime(2026, 12, 2, 2, tzinfo=UTC)
    # no new key for DAGs without a window: their serialised form (and hash: no new DAG version) is unchanged
    assert "start_offset_seconds" not in plain.serialize()


def test_the_offset_survives_serialisation_and_the_schedule_says_when_runs_start():
    timetable = CustomerCronTimetable(
        "0 2 * * *",
        timezone="Europe/Berlin",
        runnable_since=datetime(2026, 12, 1, tzinfo=UTC),
        start_offset=timedelta(seconds=421),
    )
    again = CustomerCronTimetable.deserialize(timetable.serialize())
    assert again.start_offset == timedelta(seconds=421) and again.serialize() == timetable.serialize()
    assert timetable.description.endswith("(runs start 421 s after the tick)")
    assert not CustomerCronTimetable("0 2 * * *", timezone="UTC").description.endswith("after the tick)")


def test_a_backfill_of_a_windowed_config_runs_its_past_ticks_at_once(clock):
    clock(datetime(2026, 12, 5, 12, tzinfo=UTC))
    timetable = CustomerCronTimetable(
        "0 2 * * *", timezone="UTC", runnable_since=datetime(2026, 12, 4, tzinfo=UTC), start_offset=timedelta(minutes=9)
    )
    restriction = TimeRestriction(
        earliest=pendulum.datetime(2026, 12, 1, tz="UTC"),
        latest=pendulum.datetime(2026, 12, 3, 3, tz="UTC"),
        catchup=True,
    )
    info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert info.run_after == info.logical_date == datetime(2026, 12, 1, 2, tzinfo=UTC)


def test_auto_backfilled_ticks_of_a_windowed_config_keep_their_offset_and_their_ticks(clock):
    offset = timedelta(minutes=4)
    timetable = CustomerCronTimetable(
        "0 * * * *",
        timezone="UTC",
        runnable_since=datetime(2026, 12, 1, tzinfo=UTC),
        auto_backfill_ticks=3,
        start_offset=offset,
    )
    last = DataInterval(pendulum.datetime(2026, 12, 2, 2, tz="UTC"), pendulum.datetime(2026, 12, 2, 2, tz="UTC"))
    clock(datetime(2026, 12, 2, 9, 30, tzinfo=UTC))  # 03:00-09:00 missed: the 3 latest are 07, 08, 09
    info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=NO_RESTRICTION)
    assert (info.logical_date, info.run_after) == (
        datetime(2026, 12, 2, 7, tzinfo=UTC),
        datetime(2026, 12, 2, 7, 4, tzinfo=UTC),
    )
