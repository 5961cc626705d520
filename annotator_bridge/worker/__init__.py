"""Celery workers: configuration (``config``), the app (``celery_app``), module-level tasks (``tasks``),
``CeleryDispatcher`` (``dispatcher``) and the broker/worker probe (``probe``).

Importing this package does nothing else: no broker connection, no model load.
"""
