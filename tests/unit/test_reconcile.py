"""Which transitions reconciliation writes: only those the mirror lacks, never a second ending."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customer_pipelines.reconcile import TryRecord, expected_events, missing_events

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _try(try_number: int, state: str | None, started: bool = True) -> TryRecord:
    return TryRecord(
        "cust_a.cfg",
        "manual__1",
        try_number,
        state,
        T0 if started else None,
        T0 + timedelta(minutes=1) if state else None,
        T0,
        "manual",
        T0,
    )


def test_a_finished_try_expects_running_and_its_ending():
    events = expected_events([_try(1, "success")])
    assert [(e["state"], e["try_number"], e["source"]) for e in events] == [
        ("RUNNING", 1, "reconciler"),
        ("COMPLETED", 1, "reconciler"),
    ]
    assert events[0]["run_key"] == "cust_a.cfg/manual__1"
    assert (events[0]["customer_id"], events[0]["config_id"]) == ("cust_a", "cfg")


def test_a_try_that_never_started_expects_only_its_ending():
    events = expected_events([_try(1, "upstream_failed", started=False)])
    assert [e["state"] for e in events] == ["CANCELLED"]


def test_nothing_is_missing_when_the_operator_already_wrote_a_more_precise_ending():
    expected = expected_events([_try(1, "failed")])  # Airflow says failed; the operator said TIMEOUT
    present = [
        {"run_key": "cust_a.cfg/manual__1", "try_number": 1, "state": "RUNNING"},
        {"run_key": "cust_a.cfg/manual__1", "try_number": 1, "state": "TIMEOUT"},
    ]
    assert missing_events(expected, present) == []


def test_a_try_whose_events_were_lost_is_filled_and_other_tries_are_left_alone():
    expected = expected_events([_try(1, "up_for_retry"), _try(2, "success")])
    present = [
        {"run_key": "cust_a.cfg/manual__1", "try_number": 1, "state": "RUNNING"},
        {"run_key": "cust_a.cfg/manual__1", "try_number": 1, "state": "RETRYING"},
    ]
    missing = missing_events(expected, present)
    assert [(e["state"], e["try_number"]) for e in missing] == [("RUNNING", 2), ("COMPLETED", 2)]


def test_a_running_try_expects_no_ending_yet():
    assert [e["state"] for e in expected_events([_try(1, "running")])] == ["RUNNING"]


def test_an_ending_only_airflow_recorded_is_filled_as_the_platforms_failure_not_the_customers():
    """The operator mirrors every failure of the customer's pipeline itself: a failed try with no
    mirrored ending failed before the pipeline ran (no snapshot, settings) or lost its process or spool,
    so it must not count toward auto-pause."""
    events = expected_events([_try(1, "up_for_retry"), _try(2, "failed"), _try(3, "success")])
    assert [(e["state"], e["try_number"], e["error_type"]) for e in events if e["state"] != "RUNNING"] == [
        ("RETRYING", 1, "PLATFORM"),
        ("FAILED", 2, "PLATFORM"),
        ("COMPLETED", 3, None),
    ]
    assert "never reported" in events[3]["error_message"]
