# The Airflow image of the production-like stack (docker-compose.yaml): the official Airflow 3.3.2
# image plus this project's pinned requirements. Build context: the repository root.
#   docker compose build   (or: docker build -f docker/airflow.Dockerfile .)
FROM apache/airflow:3.3.2-python3.11

# requirements.txt names what the project needs; constraints.txt pins the whole resolved set, so the
# image gets exactly the versions the test suite ran against (and keeps the base image's Airflow).
COPY requirements.txt constraints.txt /
RUN pip install --no-cache-dir -r /requirements.txt -c /constraints.txt

# The config snapshot directory (CP_STATE_DIR). A named volume mounted here starts as a copy of this
# directory, owner and mode included, so every Airflow container (uid ${AIRFLOW_UID}, group 0) can
# write to it: dag-processor and workers read the snapshot, the syncer replaces it atomically.
USER root
RUN mkdir -p /opt/airflow/state \
    && chown -R airflow:0 /opt/airflow/state \
    && chmod -R g+rwX /opt/airflow/state
USER airflow

ENV PYTHONPATH=/opt/airflow/plugins
