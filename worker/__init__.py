"""LayerTracer's Celery workers: load a job spec from the database, call the engine, store results."""
