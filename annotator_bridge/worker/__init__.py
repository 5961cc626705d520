"""Celery workers: the app (``celery_app``), thin tasks (``tasks``) and ``CeleryDispatcher``.

Importing this package does nothing else: no broker connection, no model load.
"""
