# The BigQuery emulator of the production-like stack (service `bigquery-emulator` in
# docker-compose.yaml). Build context: the repository root.
#
# It must never download anything at run time: DuckDB's spatial extension, which the emulator
# would INSTALL from the web at start-up, is copied from the duckdb-extension-spatial wheel into
# the extension directory of the `bq` user's HOME. That wheel (and so this image) is x86_64 only.
FROM --platform=linux/amd64 python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BQEMU_ENABLE_FORMAT_EXTENSIONS=false

# Same pins as the local emulator's virtualenv (constraints-bqemulator.txt).
COPY constraints-bqemulator.txt /tmp/constraints-bqemulator.txt
RUN pip install --no-cache-dir -c /tmp/constraints-bqemulator.txt \
        bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy \
    && rm /tmp/constraints-bqemulator.txt

RUN useradd --create-home --home-dir /home/bq --uid 1000 --user-group --shell /usr/sbin/nologin bq \
    && mkdir -p /data /home/bq/.duckdb/extensions/v1.5.5/linux_amd64 \
    && src="$(python -c 'import os, duckdb_extension_spatial as m; print(os.path.dirname(m.__file__))')" \
    && cp "$src/extensions/v1.5.5/spatial.duckdb_extension" \
          /home/bq/.duckdb/extensions/v1.5.5/linux_amd64/spatial.duckdb_extension \
    && chown -R bq:bq /data /home/bq

USER bq
ENV HOME=/home/bq
WORKDIR /home/bq

# Fail the build, not the first GEOGRAPHY query, if DuckDB would not find the extension locally:
# with auto-install off, LOAD only succeeds from the copied file, never from a download.
RUN python -c "import duckdb; c = duckdb.connect(config={'autoinstall_known_extensions': False}); \
c.execute('LOAD spatial'); print(c.execute('SELECT ST_AsText(ST_Point(1, 2))').fetchone()[0])"

VOLUME ["/data"]
EXPOSE 9050 9060
CMD ["bqemulator", "start", "--persistent", "--data-dir", "/data", \
     "--rest-host", "0.0.0.0", "--rest-port", "9050", "--grpc-host", "0.0.0.0", "--grpc-port", "9060"]
