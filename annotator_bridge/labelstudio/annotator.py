"""A scripted Label Studio annotator: asks ``/next/`` as a person would and answers from gold labels.

The benchmarks and the end-to-end tests use it to play annotators against a real Label Studio, so
the queue order they see is the one people would see.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from al_loop.types import Example, Span
from annotator_bridge.labelstudio.convert import prediction_result
from annotator_bridge.labelstudio.gateway import LabelStudioGateway


class Annotator:
    """``gold`` maps al-loop item id -> ``Example`` with gold spans (NER) or labels; the task's
    ``data["item_id"]`` says which one Label Studio served. ``token`` acts as that user (default: the
    gateway's own)."""

    def __init__(self, gateway: LabelStudioGateway, ls_project_id: int, gold: Mapping[str, Example],
                 token: str | None = None) -> None:
        self.gw = gateway
        self.ls_project_id = ls_project_id
        self.gold = gold
        self.token = token
        self.config = gateway.project_config(ls_project_id)
        self.served: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any] | None:
        task = self.gw.next_task(self.ls_project_id, token=self.token)
        if task is not None:
            self.served.append(task)
        return task

    def annotate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        data = task["data"]
        ex = self.gold[str(data["item_id"])]
        predicted: list[Span] | list[str] = list(ex.spans) if ex.spans is not None else list(ex.labels or ())
        result = prediction_result(predicted, self.config, text=str(data[self.config.text_key]))
        return self.gw.create_annotation(int(task["id"]), result, token=self.token, lead_time=1.0)

    def label(self, n: int) -> list[dict[str, Any]]:
        """Label the next ``n`` tasks Label Studio serves; returns the served tasks in order."""
        done = []
        for _ in range(n):
            task = self.next()
            if task is None:
                break
            self.annotate(task)
            done.append(task)
        return done


__all__ = ["Annotator"]
