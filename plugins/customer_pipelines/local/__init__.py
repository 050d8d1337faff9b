"""The embedded local stack: BigQuery emulator, PostgreSQL and Airflow's components, started as
plain processes with their data under the state directory. The demo and the end-to-end tests use it;
docker-compose.yaml runs the same services in containers."""
