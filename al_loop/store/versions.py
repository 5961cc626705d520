"""How a new version of a stored annotation is judged (pure: no database, no clock).

An annotation is stored once per key (``ls:<annotation id>``). Each delivery carries its content
(payload + skipped) and, when the source gave a parseable one, its version time (Label Studio's
``updated_at``). The rules, in order:

- **Both carry a version time**: older = ``stale`` (an out-of-order event, ignored), equal =
  ``duplicate`` (a redelivery), strictly newer = ``updated`` (it also lifts a deletion); a newer
  time with the same content on a live annotation is a ``duplicate`` that only records the time.
- **Deleted (a tombstone)**: nothing but a strictly newer, parseable version brings it back; the
  same content again is a ``duplicate``, other content a ``stale`` event.
- **Without a version time on one side**: compared by content: the same content is a
  ``duplicate`` (no new record, no version bump), other content an ``update``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class LabelOutcome(StrEnum):
    """What recording one annotation delivery did."""

    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class Verdict:
    outcome: LabelOutcome
    record_version: bool = False
    """A duplicate that still records the (newer or first) version time: no content change, no bump."""


def content_key(payload: dict[str, Any] | None, skipped: bool) -> str:
    """Canonical text of an annotation's content: label order and span order do not matter."""
    body = dict(payload or {})
    if isinstance(body.get("labels"), list):
        body["labels"] = sorted(str(lb) for lb in body["labels"])
    if isinstance(body.get("spans"), list):
        body["spans"] = sorted(body["spans"], key=lambda s: json.dumps(s, sort_keys=True))
    return json.dumps({"skipped": bool(skipped), "body": {} if skipped else body}, sort_keys=True)


def judge(*, stored_version: datetime | None, deleted: bool, same_content: bool,
          incoming_version: datetime | None) -> Verdict:
    """The outcome of a delivery for an annotation that is already stored (see the module docstring)."""
    if incoming_version is not None and stored_version is not None:
        if incoming_version < stored_version:
            return Verdict(LabelOutcome.STALE)
        if incoming_version == stored_version:
            return Verdict(LabelOutcome.DUPLICATE)
        if same_content and not deleted:
            return Verdict(LabelOutcome.DUPLICATE, record_version=True)
        return Verdict(LabelOutcome.UPDATED)
    if deleted:
        return Verdict(LabelOutcome.DUPLICATE if same_content else LabelOutcome.STALE)
    if same_content:
        return Verdict(LabelOutcome.DUPLICATE, record_version=incoming_version is not None)
    return Verdict(LabelOutcome.UPDATED)


__all__ = ["LabelOutcome", "Verdict", "content_key", "judge"]
