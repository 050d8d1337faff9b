"""The runs: the operator that starts a pipeline (quota gate, failures), the run-state mirror with
its listeners, reconcile and SLA alerts, and the failure policy."""
