"""The REST API for the product (configs, enable/pause, runs, usage, customers, keys), a FastAPI app
that Airflow's API server serves through the plugin (``fastapi_apps``). A thin layer: requests are
checked and authorised here, and the work is done by the store, the snapshot and the syncer's rules."""
