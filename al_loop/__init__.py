"""al-loop core: data, models, strategies, training, rounds and store.

Nothing in this package imports Flask, Celery, Redis, the Label Studio SDK or
``annotator_bridge``; importing it has no side effects (no model load, no I/O).
"""

__version__ = "0.1.0"
