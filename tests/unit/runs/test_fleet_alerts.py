"""The seeds' fleet alerts: each raised when its condition starts, not raised again while it lasts
(across syncer restarts too: the episodes are kept in the state directory), cleared when it ends,
and raised again when it starts again. Facts are given as a round would read them; reading them from
Airflow's database and the ledger is tested in tests/integration/test_fleet_alerts.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.runs.failure_policy import Alert
from customer_pipelines.runs.fleet_alerts import FLEET, STATE_FILE, FleetFacts, evaluate
from customer_pipelines.settings import Settings

NOW = datetime(2026, 12, 4, 2, 30, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


class Sent(list):
    def __call__(self, alert: Alert) -> None:
        self.append(alert)

    def of(self, state: str) -> list[tuple[str, str]]:
        return [(a.level, a.customer_id) for a in self if a.state == state]


def _rounds(settings: Settings, *facts: FleetFacts, step: timedelta = timedelta(minutes=1)) -> list[Sent]:
    """One syncer round per facts; what each sent."""
    sent = []
    for n, round_facts in enumerate(facts):
        notifier = Sent()
        evaluate(settings, round_facts, notifier=notifier, now=NOW + n * step)
        sent.append(notifier)
    return sent


def test_runs_waiting_is_raised_above_the_threshold_once_per_episode_and_cleared_after(settings):
    waiting = [1000, 1001, 2500, 1001, 999, 1200]
    sent = _rounds(settings, *(FleetFacts(waiting_runs=n) for n in waiting))
    assert [s.of("RAISED") for s in sent] == [[], [("RUNS_WAITING", "")], [], [], [], [("RUNS_WAITING", "")]]
    assert [s.of("CLEARED") for s in sent] == [[], [], [], [], [("RUNS_WAITING", "")], []]
    assert "1001 runs waiting to start (threshold 1000)" in sent[1][0].message


def test_a_run_running_too_long_is_raised_for_that_run_and_cleared_when_it_ends(settings):
    started = NOW - timedelta(minutes=29)
    long_a = {"cust_a.daily/scheduled__1": started, "cust_b.hourly/scheduled__2": started - timedelta(minutes=20)}
    sent = _rounds(
        settings,
        FleetFacts(running_since=long_a),  # b: 49 min, a: 29 min
        FleetFacts(running_since=long_a),  # a: 30 min (not above), b still
        FleetFacts(running_since=long_a),  # a: 31 min
        FleetFacts(running_since={"cust_a.daily/scheduled__1": started}),  # b finished
        FleetFacts(),
    )
    assert [s.of("RAISED") for s in sent] == [[("RUN_TOO_LONG", "cust_b")], [], [("RUN_TOO_LONG", "cust_a")], [], []]
    assert [s.of("CLEARED") for s in sent] == [[], [], [], [("RUN_TOO_LONG", "cust_b")], [("RUN_TOO_LONG", "cust_a")]]
    assert "run cust_b.hourly/scheduled__2 running for 49 min (threshold 30)" in sent[0][0].message


def test_failure_rate_of_the_fleet_and_of_a_customer_above_the_threshold_with_enough_runs(settings):
    sent = _rounds(
        settings,
        FleetFacts(outcomes={FLEET: (1, 10), "cust_a": (1, 2)}),  # 10% is not above; 2 runs too few
        FleetFacts(outcomes={FLEET: (2, 10), "cust_a": (2, 10)}),
        FleetFacts(outcomes={FLEET: (3, 12), "cust_a": (0, 10), "cust_b": (3, 10)}),
        FleetFacts(outcomes={FLEET: (0, 12)}),
    )
    assert [sorted(s.of("RAISED")) for s in sent] == [
        [],
        [("FAILURE_RATE", ""), ("FAILURE_RATE", "cust_a")],
        [("FAILURE_RATE", "cust_b")],
        [],
    ]
    assert [sorted(s.of("CLEARED")) for s in sent] == [
        [],
        [],
        [("FAILURE_RATE", "cust_a")],
        [("FAILURE_RATE", ""), ("FAILURE_RATE", "cust_b")],
    ]
    fleet = next(a for a in sent[1] if a.customer_id == "")
    assert fleet.message.startswith("the fleet: 2 of 10 runs failed in the last 60 min (20%, threshold 10%)")


def test_a_customer_that_reached_its_daily_quota_is_raised_once_and_cleared_the_next_day(settings):
    limits = {"cust_a": 5, "cust_unlimited": None}
    sent = _rounds(
        settings,
        FleetFacts(used_today={"cust_a": 4, "cust_unlimited": 900}, daily_limits=limits),
        FleetFacts(used_today={"cust_a": 5, "cust_unlimited": 901}, daily_limits=limits),
        FleetFacts(used_today={"cust_a": 6}, daily_limits=limits),
        FleetFacts(used_today={}, daily_limits=limits),  # a new UTC day: nothing used yet
    )
    assert [s.of("RAISED") for s in sent] == [[], [("QUOTA_REACHED", "cust_a")], [], []]
    assert [s.of("CLEARED") for s in sent] == [[], [], [], [("QUOTA_REACHED", "cust_a")]]
    assert "customer cust_a reached its daily quota: 5 of 5 runs today" in sent[1][0].message


def test_a_restarted_syncer_neither_raises_an_open_episode_again_nor_forgets_to_clear_it(settings, tmp_path):
    _rounds(settings, FleetFacts(waiting_runs=5000))
    assert (settings.state_dir / STATE_FILE).stat().st_mode & 0o077 == 0
    restarted = Settings(state_dir=settings.state_dir)  # a new process: only the state directory is shared
    again = _rounds(restarted, FleetFacts(waiting_runs=5000), FleetFacts(waiting_runs=3))
    assert [s.of("RAISED") for s in again] == [[], []]
    assert [s.of("CLEARED") for s in again] == [[], [("RUNS_WAITING", "")]]


def test_an_unreadable_record_starts_over_and_the_round_still_alerts(settings):
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / STATE_FILE).write_text("{not json")
    [sent] = _rounds(settings, FleetFacts(waiting_runs=5000))
    assert sent.of("RAISED") == [("RUNS_WAITING", "")]


def test_thresholds_come_from_the_settings(tmp_path):
    strict = Settings(
        state_dir=tmp_path / "strict",
        alert_waiting_runs=10,
        alert_running_minutes=5,
        alert_failure_rate=0.5,
        alert_failure_min_runs=2,
    )
    [sent] = _rounds(
        strict,
        FleetFacts(
            waiting_runs=11,
            running_since={"cust_a.x/r": NOW - timedelta(minutes=6)},
            outcomes={"cust_a": (2, 3), "cust_b": (1, 2)},
        ),
    )
    assert sorted(sent.of("RAISED")) == [
        ("FAILURE_RATE", "cust_a"),
        ("RUNS_WAITING", ""),
        ("RUN_TOO_LONG", "cust_a"),
    ]


def test_recording_an_episode_keeps_the_state_directorys_traversal_for_the_embedded_postgresql(settings):
    """The stack grants the embedded PostgreSQL's user traversal of the state directory (0710) when it
    runs as root; a write narrowing it to 0700 cut the running database off (found by the page's e2e)."""
    from customer_pipelines.syncer import defer_parses

    settings.state_dir.mkdir(mode=0o700)
    settings.state_dir.chmod(0o710)
    _rounds(settings, FleetFacts(waiting_runs=5000))
    defer_parses(settings, ["customer_pipelines_config_errors.py"])
    assert settings.state_dir.stat().st_mode & 0o777 == 0o710
