"""LayerTracer's FastAPI service: versioned REST API, database models and migrations.

Never imports torch or the engine: jobs are sent to workers by task name (see ``worker``).
"""
