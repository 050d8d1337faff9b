"""The schedule of a customer DAG: the config's cron in the config's timezone (DST-correct, from
Airflow's CronTriggerTimetable), anchored at the moment the config became runnable.

Why an anchor: the DAG processor recomputes a DAG's next run at every parse of the fleet file. A rule
based on "now" (the next tick after now) moves once a tick has passed, so a DAG whose run the
scheduler had not created yet lost that tick for good (measured: 180 of 200 new DAGs due at one
minute). ``runnable_since`` comes from the snapshot (see snapshot.runnable_anchors) and does not
move between parses, so the first run is the first tick at or after it, however late the scheduler
gets to it, and never a tick from before the config existed or was last made runnable.

After the first run Airflow's own catchup=False rule applies (the latest tick not run yet), unless
the config's ``auto_backfill_ticks`` K > 0: then the scheduler also runs up to the K latest ticks it
missed (a scheduler outage, a slow queue) in order, the older ones staying for backfills. A DAG
whose config must not run (``runnable_since`` None) has no next run at all: it is paused, and when
it is made runnable again the next parse gives it a new anchor, so re-enabling never fires a tick
that passed while it was off. Those are recovered with backfills: Airflow's backfill asks the
timetable with catchup=True, which the anchor leaves alone.

A config with a start window has a ``start_offset`` (models.start_offset): the scheduler creates a
tick's run that long after the tick (``run_after`` = tick + offset, Airflow's "not before"), while its
logical date and data interval stay the tick's, so the run, the mirror, the quota day and missed-run
accounting all name the tick. Backfills start at once (the ticks are past)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from airflow._shared.timezones.timezone import coerce_datetime
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable


@functools.lru_cache(maxsize=4096)
def _cron_part(cron: str, timezone: str) -> dict[str, Any]:
    """What Airflow's CronTriggerTimetable computes from the expression and timezone alone (its
    croniter expansion check and the human description): about 1.2 ms each time, while a fleet of
    50,000 configs has a few hundred distinct (cron, timezone) pairs. Its values are immutable."""
    return dict(CronTriggerTimetable(cron, timezone=timezone).__dict__)


class CustomerCronTimetable(CronTriggerTimetable):
    def __init__(
        self,
        cron: str,
        *,
        timezone: Any,
        runnable_since: datetime | None = None,
        auto_backfill_ticks: int = 0,
        start_offset: timedelta = timedelta(0),
    ) -> None:
        if isinstance(timezone, str):
            self.__dict__.update(_cron_part(cron, timezone))
        else:
            super().__init__(cron, timezone=timezone)
        self.runnable_since = coerce_datetime(runnable_since) if runnable_since is not None else None
        self.auto_backfill_ticks = auto_backfill_ticks
        self.start_offset = start_offset
        if start_offset:  # the UI's schedule column says when runs start
            self.description = f"{self.description} (runs start {int(start_offset.total_seconds())} s after the tick)"

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> CustomerCronTimetable:
        since = data.get("runnable_since")
        return cls(
            data["expression"],
            timezone=data["timezone"],
            runnable_since=datetime.fromisoformat(since) if since else None,
            auto_backfill_ticks=int(data.get("auto_backfill_ticks") or 0),
            start_offset=timedelta(seconds=int(data.get("start_offset_seconds") or 0)),
        )

    def serialize(self) -> dict[str, Any]:
        data = super().serialize()
        data["runnable_since"] = self.runnable_since.isoformat() if self.runnable_since else None
        data["auto_backfill_ticks"] = self.auto_backfill_ticks
        if self.start_offset:  # absent when 0: DAGs without a window serialise as before (no new version)
            data["start_offset_seconds"] = int(self.start_offset.total_seconds())
        return data

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if restriction.catchup:
            # A backfill (Airflow's SerializedDAG.iter_dagrun_infos_between, catchup=True) asks for
            # the ticks of a window a person chose: the anchor guards only the scheduler's own runs
            # (our DAGs have catchup=False), so ticks missed while the config was off are recoverable.
            return super().next_dagrun_info(
                last_automated_data_interval=last_automated_data_interval, restriction=restriction
            )
        if self.runnable_since is None:
            return None
        earliest = self.runnable_since
        if restriction.earliest is not None:
            earliest = max(earliest, restriction.earliest)
        if self.auto_backfill_ticks and last_automated_data_interval is not None:
            info = self._catch_up(last_automated_data_interval, earliest, restriction.latest)
        else:
            info = super().next_dagrun_info(
                last_automated_data_interval=last_automated_data_interval,
                restriction=TimeRestriction(earliest=earliest, latest=restriction.latest, catchup=restriction.catchup),
            )
        if info is None or not self.start_offset:
            return info
        return DagRunInfo(
            run_after=coerce_datetime(info.run_after + self.start_offset), data_interval=info.data_interval
        )

    def _catch_up(self, last: DataInterval, earliest: datetime, latest: datetime | None) -> DagRunInfo | None:
        """The tick after the last run, but none older than the K-th latest tick due now."""
        from airflow.timetables import trigger  # its clock, as Airflow's own catchup=False rule reads it

        oldest = self._align_to_prev(coerce_datetime(trigger.utcnow()))
        for _ in range(self.auto_backfill_ticks - 1):
            oldest = self._get_prev(oldest)
        start = max(self._get_next(last.end), oldest, self._align_to_next(coerce_datetime(earliest)))
        if latest is not None and latest < start:
            return None
        return DagRunInfo.interval(coerce_datetime(start - self._interval), start)

    def next_tick(self, moment: datetime) -> datetime:
        """The tick the scheduler runs next at ``moment``, the previous tick having run: Airflow's
        own candidates (the latest tick not after ``moment``, the tick after the previous one) in
        its cron arithmetic in the config's timezone. The one function every "next run" figure uses;
        it is the first tick after ``moment`` except where Airflow's DST arithmetic says otherwise
        (e.g. Lord Howe Island's half-hour shift)."""
        current = coerce_datetime(moment)
        return max(self._align_to_prev(current), self._get_next(self._get_prev(current)))
