"""A backfill's capacity: its share of the customer's pool, and its tasks' rank below live tasks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from customer_pipelines.fleet.factory import priority_weight_for
from customer_pipelines.runs.backfills import BACKFILL_PRIORITY_OFFSET, backfill_share, backfill_task_priority


@pytest.mark.parametrize(
    ("slots", "setting", "share"), [(2, 2, 1), (3, 2, 1), (10, 2, 2), (10, 8, 5), (1, 2, 1), (None, 4, 1)]
)
def test_a_backfill_runs_at_most_half_the_customers_pool_and_at_least_one(slots, setting, share):
    assert backfill_share(slots, setting) == share


def test_a_backfill_task_ranks_below_every_live_task_once_and_live_tasks_are_untouched():
    highest_backfill = SimpleNamespace(run_id="backfill__2026-12-01T00:00:00+00:00", priority_weight=103)
    lowest_live = SimpleNamespace(run_id="scheduled__2026-12-01T00:00:00+00:00", priority_weight=10)
    for task in (highest_backfill, lowest_live):
        backfill_task_priority(task)
    assert highest_backfill.priority_weight < lowest_live.priority_weight == 10
    backfill_task_priority(highest_backfill)  # the hook may see a task again
    assert highest_backfill.priority_weight == 103 - BACKFILL_PRIORITY_OFFSET


def test_the_offset_exceeds_the_widest_live_weight():
    from customer_pipelines.models import Plan

    top = priority_weight_for(SimpleNamespace(priority=10), SimpleNamespace(plan=Plan.ENTERPRISE))
    assert top - BACKFILL_PRIORITY_OFFSET < priority_weight_for(SimpleNamespace(priority=1), None)


def test_airflow_loads_the_hook_from_the_plugins_folder():
    from airflow import settings  # imports airflow_local_settings from the plugins folder (on sys.path here)

    backfill = SimpleNamespace(run_id="backfill__x", priority_weight=50)
    settings.task_instance_mutation_hook(backfill)
    assert backfill.priority_weight == 50 - BACKFILL_PRIORITY_OFFSET
    assert not getattr(settings.task_instance_mutation_hook, "is_noop", False)
