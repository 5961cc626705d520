"""Celery workers: configuration (``config``), the app (``celery_app``), module-level tasks (``tasks``),
``CeleryDispatcher`` (``dispatcher``), the batched webhook ingest list (``ingest_queue``) and the broker/worker
probe (``probe``).

Importing this package does nothing else: no broker connection, no model load.
"""
