"""The live active-learning loop between al-loop's core and Label Studio: a package of small services.

``LoopService`` (:mod:`.service`) composes them: ``ProjectSetup`` (:mod:`.projects`),
``AnnotationSync`` (:mod:`.annotations`), ``RoundPublisher`` (:mod:`.publishing`), all over
``LabelStudioLinks`` (:mod:`.link`); ``ProjectSpec`` (:mod:`.spec`) is the create spec and
:mod:`.ports` holds the gateway protocol and the id conventions.
"""

from __future__ import annotations

from annotator_bridge.loop.ports import (
    IMPORT_SOURCE,
    LABEL_SOURCE,
    Gateway,
    GatewayFactory,
    annotation_key,
    label_studio_gateway_factory,
    parse_ls_time,
)
from annotator_bridge.loop.service import LoopService
from annotator_bridge.loop.spec import ProjectSpec, examples_from_records

__all__ = [
    "IMPORT_SOURCE",
    "LABEL_SOURCE",
    "Gateway",
    "GatewayFactory",
    "LoopService",
    "ProjectSpec",
    "annotation_key",
    "examples_from_records",
    "label_studio_gateway_factory",
    "parse_ls_time",
]
