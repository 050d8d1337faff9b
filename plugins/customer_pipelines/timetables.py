"""The schedule of a customer DAG: the config's cron in the config's timezone (DST-correct, from
Airflow's CronTriggerTimetable), with one change measured necessary on Airflow 3.3.

Airflow's CronTriggerTimetable with catchup=False always offers the latest past tick as a
candidate, so a DAG that is new to Airflow (a new config, or a whole fleet's first deploy) runs that
tick at once. Here a DAG with no scheduled run yet starts at its next tick in the future; after
that, catchup=False behaves as in Airflow (re-enabling a paused config runs its most recent missed
tick once; older missed ticks are recovered with backfills)."""

from __future__ import annotations

from airflow._shared.timezones.timezone import coerce_datetime, utcnow
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable


class CustomerCronTimetable(CronTriggerTimetable):
    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            return super().next_dagrun_info(
                last_automated_data_interval=last_automated_data_interval, restriction=restriction
            )
        next_start = self._get_next(coerce_datetime(utcnow()))
        if restriction.earliest is not None:
            next_start = max(next_start, self._align_to_next(restriction.earliest))
        if restriction.latest is not None and restriction.latest < next_start:
            return None
        return DagRunInfo.interval(coerce_datetime(next_start - self._interval), next_start)
