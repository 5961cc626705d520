"""The al-loop web process: Label Studio ML-backend protocol, management API, dashboard and ``/metrics``.

``create_app`` is the factory (see :mod:`annotator_bridge.web.app`).
"""

from __future__ import annotations

from annotator_bridge.web.app import Services, create_app

__all__ = ["Services", "create_app"]
