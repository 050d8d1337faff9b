"""Issue 17 item 3: the paused flags converge on the desired state every round (sync.plan_pauses),
round after round, against a stand-in for Airflow's paused flags and the syncer's ledger."""

from __future__ import annotations

from customer_pipelines.fleet.sync import plan_pauses


class Fleet:
    """Airflow's paused flags (only the DAGs Airflow has created) and the ledger, as rounds see them."""

    def __init__(self) -> None:
        self.airflow: dict[str, bool] = {}
        self.held: set[str] = set()

    def parse(self, runnable: dict[str, bool]) -> None:
        """The DAG processor: a new DAG is created paused unless it may run (is_paused_upon_creation)."""
        for dag_id, run in runnable.items():
            self.airflow.setdefault(dag_id, not run)

    def round(self, runnable: dict[str, bool]) -> None:
        plan = plan_pauses(runnable, self.airflow, self.held)
        self.held |= plan.record
        for dag_id in plan.pause:
            self.airflow[dag_id] = True
        for dag_id in plan.unpause:
            self.airflow[dag_id] = False
        self.held -= plan.release


def test_a_config_created_held_and_made_runnable_before_the_next_round_is_unpaused():
    # A new customer's configs arrive before its subscription: the round writes the snapshot before
    # Airflow has the DAGs, the DAG processor creates them paused, then the subscription starts.
    fleet = Fleet()
    fleet.round({"cust.a": False})
    fleet.parse({"cust.a": False})
    assert fleet.airflow == {"cust.a": True}
    fleet.round({"cust.a": True})
    assert fleet.airflow == {"cust.a": False}
    assert fleet.held == set()


def test_a_dag_paused_by_the_syncer_is_unpaused_when_it_may_run_again():
    fleet = Fleet()
    fleet.parse({"cust.a": True})
    fleet.round({"cust.a": False})
    assert fleet.airflow == {"cust.a": True} and fleet.held == {"cust.a"}
    fleet.round({"cust.a": False})  # nothing changes while it stays held
    assert fleet.airflow == {"cust.a": True}
    fleet.round({"cust.a": True})
    assert fleet.airflow == {"cust.a": False} and fleet.held == set()


def test_a_person_pausing_a_runnable_dag_is_kept_round_after_round():
    fleet = Fleet()
    fleet.parse({"cust.a": True})
    fleet.round({"cust.a": True})
    fleet.airflow["cust.a"] = True  # paused in the UI
    for _ in range(3):
        fleet.round({"cust.a": True})
    assert fleet.airflow == {"cust.a": True} and fleet.held == set()


def test_a_deleted_configs_entry_leaves_the_ledger_and_a_dag_not_created_yet_keeps_its_entry():
    fleet = Fleet()
    fleet.round({"cust.a": False, "cust.b": False})
    assert fleet.held == {"cust.a", "cust.b"}  # neither created yet: recorded for the factory's paused creation
    fleet.round({"cust.b": False})  # cust.a deleted
    assert fleet.held == {"cust.b"}


def test_a_held_dag_with_a_task_running_is_not_paused_until_the_task_ends_and_then_is():
    """Pausing a config lets the run in flight finish: Airflow's pause would freeze it (no retry,
    its DagRun never ends); the held config's timetable already creates no new run."""
    fleet = Fleet()
    fleet.parse({"cust.a": True})
    plan = plan_pauses({"cust.a": False}, fleet.airflow, fleet.held, in_flight={"cust.a"})
    assert plan.pause == set() and "cust.a" in plan.record
    fleet.held |= plan.record
    fleet.held -= plan.release
    assert fleet.airflow == {"cust.a": False} and fleet.held == {"cust.a"}
    fleet.round({"cust.a": False})  # the task ended: nothing in flight
    assert fleet.airflow == {"cust.a": True}
    fleet.round({"cust.a": True})  # enabled again: the syncer's own pause is undone
    assert fleet.airflow == {"cust.a": False}


def test_a_deferred_pause_of_a_config_enabled_again_meanwhile_leaves_it_running():
    fleet = Fleet()
    fleet.parse({"cust.a": True})
    plan = plan_pauses({"cust.a": False}, fleet.airflow, fleet.held, in_flight={"cust.a"})
    fleet.held |= plan.record
    fleet.round({"cust.a": True})
    assert fleet.airflow == {"cust.a": False} and fleet.held == set()
