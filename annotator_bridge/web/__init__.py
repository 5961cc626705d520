"""The al-loop web process: Label Studio ML-backend protocol, management API, monitoring.

``create_app`` is the factory (see :mod:`annotator_bridge.web.app`); ``register_extensions``
adds the monitoring blueprints (``annotator_bridge.web.register``, when installed).
"""

from __future__ import annotations

from typing import Any

from annotator_bridge.web.app import Services, create_app


def register_extensions(app: Any) -> None:
    """Register the dashboard and /metrics blueprints (a no-op when the monitoring modules are absent)."""
    from annotator_bridge.web.app import _register_monitoring

    _register_monitoring(app)


__all__ = ["Services", "create_app", "register_extensions"]
