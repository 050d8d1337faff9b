"""The fleet: configs -> snapshot -> DAGs (factory, timetables), and the syncer that keeps
Airflow's pools and paused flags on the snapshot."""
