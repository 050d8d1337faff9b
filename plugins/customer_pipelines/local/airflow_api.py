"""A small client of Airflow's public REST API (v2), for the CLI's demo run and the tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class AirflowAPIError(RuntimeError):
    pass


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise AirflowAPIError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')[:500]}") from exc
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}")

    def dag_details(self, dag_id: str) -> dict[str, Any]:
        """The DAG as last parsed (doc_md, ...), beside its flags."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/details")

    def dags(self, tag: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = f"?limit={limit}" + (f"&tags={tag}" if tag else "")
        return self._request("GET", f"/api/v2/dags{query}")["dags"]

    def plugins(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v2/plugins?limit=100")["plugins"]

    def import_errors(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v2/importErrors")["import_errors"]

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, *, logical_date: str | None = None, run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": logical_date}
        if run_id:
            body["dag_run_id"] = run_id
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def runs_of_all_dags(self, **filters: str) -> list[dict[str, Any]]:
        """Every DAG run matching Airflow's list filters (e.g. ``run_after_gte``), all pages."""
        runs: list[dict[str, Any]] = []
        while True:
            query = urllib.parse.urlencode({**filters, "limit": 100, "offset": len(runs), "order_by": "id"})
            page = self._request("GET", f"/api/v2/dags/~/dagRuns?{query}")
            runs += page["dag_runs"]
            if not page["dag_runs"] or len(runs) >= page["total_entries"]:
                return runs

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """What a person does with "Mark as failed / success" in the UI."""
        return self._request(
            "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state}
        )

    def clear_run(self, dag_id: str, run_id: str) -> Any:
        """What a person does with "Clear" on a DAG run in the UI: its task runs again (a new execution)."""
        return self._request(
            "POST",
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            {"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
        )

    def create_backfill(self, dag_id: str, from_date: str, to_date: str, *, reprocess_behavior: str = "none") -> Any:
        """Airflow's backfill of the DAG's ticks in [from_date, to_date]; ``reprocess_behavior``
        ``failed`` or ``completed`` clears the existing runs of those ticks instead of skipping them."""
        return self._request(
            "POST",
            "/api/v2/backfills",
            {
                "dag_id": dag_id,
                "from_date": from_date,
                "to_date": to_date,
                "reprocess_behavior": reprocess_behavior,
                "max_active_runs": 1,
            },
        )

    def set_dag_run_state(self, dag_id: str, run_id: str, state: str) -> Any:
        return self._request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": state})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> dict[str, Any]:
        """A try's log as the UI shows it (its ``content`` and where it was read from)."""
        return self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        )

    def pool(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/pools/{name}")

    def set_pool_slots(self, name: str, slots: int) -> dict[str, Any]:
        return self._request(
            "PATCH",
            f"/api/v2/pools/{name}?update_mask=slots",
            {"name": name, "slots": slots, "include_deferred": False},
        )

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise TimeoutError(f"run {dag_id}/{run_id} did not finish in {timeout:.0f}s (state {run['state']})")

    def wait_for_dags(self, dag_ids: list[str], *, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        while time.monotonic() < deadline:
            for dag_id in list(missing):
                try:
                    self.dag(dag_id)
                    missing.discard(dag_id)
                except AirflowAPIError:
                    pass
            if not missing:
                return
            time.sleep(1)
        raise TimeoutError(f"DAGs not parsed after {timeout:.0f}s: {sorted(missing)}")
