"""Which transitions reconciliation writes: only what Airflow's records prove, only what the mirror
lacks, one ending per try, and RETRYING never taken for a try's last word."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customer_pipelines.runs.reconcile import TryRecord, expected_events, missing_events

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
RUN_KEY = "cust_a.cfg/manual__1"


def _try(
    try_number: int,
    state: str | None,
    *,
    started_by_worker: bool = True,
    archived: bool = False,
    max_tries: int = 2,
    start: datetime | None = T0,
) -> TryRecord:
    return TryRecord(
        "cust_a.cfg",
        "manual__1",
        try_number,
        state,
        start,
        start + timedelta(minutes=1) if start and state else None,
        T0,
        "manual",
        T0,
        max_tries=max_tries,
        archived=archived,
        started_by_worker=started_by_worker,
    )


def _states(events: list[dict]) -> list[tuple[str, int]]:
    return [(e["state"], e["try_number"]) for e in events]


def _present(*rows: tuple[int, str, str]) -> list[dict]:
    return [{"run_key": RUN_KEY, "try_number": t, "state": s, "source": source} for t, s, source in rows]


def test_a_finished_try_a_worker_started_expects_running_and_its_ending():
    events = expected_events([_try(1, "success")])
    assert [(e["state"], e["try_number"], e["source"]) for e in events] == [
        ("RUNNING", 1, "reconciler"),
        ("COMPLETED", 1, "reconciler"),
    ]
    assert events[0]["run_key"] == RUN_KEY
    assert (events[0]["customer_id"], events[0]["config_id"]) == ("cust_a", "cfg")
    assert events[0]["started_at"] == T0


def test_a_try_that_never_started_expects_only_its_ending():
    events = expected_events([_try(1, "upstream_failed", started_by_worker=False, start=None)])
    assert [e["state"] for e in events] == ["CANCELLED"]


def test_a_quota_skipped_try_expects_skipped_and_no_running():
    # Airflow set its start_date when the worker started it; the operator skipped at the quota gate.
    assert _states(expected_events([_try(1, "skipped")])) == [("SKIPPED", 1)]


def test_a_try_marked_by_hand_before_it_ran_expects_no_running_and_no_start():
    # set_state gave it a start_date; no worker ever started it (no start in Airflow's log).
    [event] = expected_events([_try(1, "success", started_by_worker=False)])
    assert (event["state"], event["started_at"]) == ("COMPLETED", None)


def test_a_retry_scheduled_or_queued_expects_nothing_though_it_carries_the_previous_tries_start():
    for waiting in ("scheduled", "queued", None):
        # Airflow raised try_number to 2 and kept try 1's start_date on the row
        records = [_try(2, waiting, started_by_worker=False), _try(1, "failed", archived=True)]
        assert _states(expected_events(records)) == [("RUNNING", 1), ("RETRYING", 1)], waiting


def test_a_try_waiting_for_its_retry_expects_retrying_once_not_the_historys_failed():
    # on a retry Airflow archives the try as 'failed' while the row is up_for_retry, same try, same end
    records = [_try(1, "up_for_retry"), _try(1, "failed", archived=True)]
    assert _states(expected_events(records)) == [("RUNNING", 1), ("RETRYING", 1)]
    assert _states(expected_events(reversed(records))) == [("RUNNING", 1), ("RETRYING", 1)]


def test_an_archived_failure_with_retries_left_was_a_retry_and_one_without_is_final():
    retried = _try(1, "failed", archived=True, max_tries=1)
    exhausted = _try(2, "failed", archived=True, max_tries=1)  # the last try failed, then the run was cleared
    assert _states(expected_events([retried, exhausted])) == [
        ("RUNNING", 1),
        ("RETRYING", 1),
        ("RUNNING", 2),
        ("FAILED", 2),
    ]


def test_a_cleared_row_leaves_its_try_to_the_history():
    # clear_task_instances archives the try, then sets the row's state to None with the same try_number
    records = [_try(1, None), _try(1, "success", archived=True)]
    assert _states(expected_events(records)) == [("RUNNING", 1), ("COMPLETED", 1)]


def test_a_running_try_expects_nothing_yet():
    assert expected_events([_try(1, "running")]) == []


def test_nothing_is_missing_when_the_operator_already_wrote_a_more_precise_ending():
    expected = expected_events([_try(1, "failed")])  # Airflow says failed; the operator said TIMEOUT
    assert missing_events(expected, _present((1, "RUNNING", "operator"), (1, "TIMEOUT", "operator"))) == []


def test_a_try_whose_events_were_lost_is_filled_and_other_tries_are_left_alone():
    expected = expected_events([_try(1, "failed", archived=True), _try(2, "success")])
    present = _present((1, "RUNNING", "operator"), (1, "RETRYING", "operator"))
    assert _states(missing_events(expected, present)) == [("RUNNING", 2), ("COMPLETED", 2)]


def test_an_operator_ending_without_running_means_its_pipeline_never_started():
    # the quota ledger was down (or the gate timed out): the operator wrote FAILED and no RUNNING
    expected = expected_events([_try(1, "failed")])
    assert missing_events(expected, _present((1, "FAILED", "operator"))) == []


def test_a_try_ended_by_a_listener_gets_the_running_a_worker_started():
    # killed: the scheduler's listener reported the ending; the worker's RUNNING went with its spool
    expected = expected_events([_try(1, "up_for_retry")])
    assert _states(missing_events(expected, _present((1, "RETRYING", "listener:scheduler")))) == [("RUNNING", 1)]


def test_retrying_in_the_mirror_does_not_cover_the_ending_airflow_gave_the_try_later():
    # the DAG run was marked success while the task waited for its retry: Airflow skipped the task
    expected = expected_events([_try(1, "skipped"), _try(1, "failed", archived=True)])
    present = _present((1, "RUNNING", "operator"), (1, "RETRYING", "operator"))
    [skipped] = missing_events(expected, present)
    assert (skipped["state"], skipped["try_number"], skipped["details"]) == ("SKIPPED", 1, {"airflow_state": "skipped"})


def test_a_try_waiting_for_its_retry_gets_retrying_only_when_the_mirror_lost_it():
    expected = expected_events([_try(1, "up_for_retry"), _try(1, "failed", archived=True)])
    assert _states(missing_events(expected, _present((1, "RUNNING", "operator")))) == [("RETRYING", 1)]
    assert missing_events(expected, _present((1, "RUNNING", "operator"), (1, "RETRYING", "operator"))) == []


def test_what_one_batch_adds_counts_as_present():
    [running, retrying] = expected_events([_try(1, "up_for_retry")])
    assert _states(missing_events([running, retrying, running, retrying], [])) == [("RUNNING", 1), ("RETRYING", 1)]
    assert _states(missing_events(expected_events([_try(1, "failed")]) * 2, [])) == [("RUNNING", 1), ("FAILED", 1)]


def test_an_ending_only_airflow_recorded_is_filled_as_the_platforms_failure_not_the_customers():
    """The operator mirrors every failure of the customer's pipeline itself: a failed try with no
    mirrored ending failed before the pipeline ran (no snapshot, settings) or lost its process or spool,
    so it must not count toward auto-pause."""
    retried = _try(1, "failed", archived=True, max_tries=2)
    events = expected_events([retried, _try(2, "failed", max_tries=1), _try(3, "success")])
    endings = [e for e in events if e["state"] != "RUNNING"]
    assert [(e["state"], e["try_number"], e["error_type"]) for e in endings] == [
        ("RETRYING", 1, "PLATFORM"),
        ("FAILED", 2, "PLATFORM"),
        ("COMPLETED", 3, None),
    ]
    assert "never reported" in endings[1]["error_message"] and endings[2]["error_message"] is None


def test_reconciled_tries_are_written_to_their_execution_of_a_cleared_run():
    """Airflow keeps only the run's current clear_number (and queued_at, reset by the clear): a try
    of the current execution gets it, an archived try from before the clear an earlier one."""
    from dataclasses import replace

    cleared_at = T0 + timedelta(hours=1)
    before = replace(_try(1, "success", archived=True), run_clear_number=2, run_queued_at=cleared_at)
    after = replace(
        _try(2, "success", start=cleared_at + timedelta(minutes=1)), run_clear_number=2, run_queued_at=cleared_at
    )
    events = expected_events([before, after])
    assert {(e["try_number"], e["clear_number"]) for e in events} == {(1, 1), (2, 2)}
    never_cleared = expected_events([_try(1, "success")])
    assert {e["clear_number"] for e in never_cleared} == {0}
