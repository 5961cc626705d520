"""Pool-scoring fan-out over Celery: a round's shard jobs as a group on the ``score`` queue.

The round's own worker (train queue) calls :class:`CeleryShardRunner` from inside
``RoundService`` (a :data:`~al_loop.rounds.pool_round.ShardRunner`): it publishes one
``score_shard`` task per shard as a Celery ``group`` and waits for the shards' result folders in
the round's scratch folder (under the shared artifacts folder), heartbeating the round meanwhile,
so the round stays ``running`` in phase ``score`` while its shards run. al-loop's Celery has no
result backend (round state lives in the database, shard results in files), so the "chord" is
this wait: the merge (:func:`al_loop.rounds.pool_scoring.merge_results`) and the selection run in
the round's worker when every shard folder is there.

- A shard that raises leaves ``shard-<scan>-<i>.failed`` (its error) and the round fails with
  ``score shard i/n failed: ...``.
- A shard whose worker dies is redelivered (``acks_late``) and scores again; one that finds its
  result on disk returns at once (idempotent).
- Before sending, :meth:`CeleryShardRunner.available` asks the workers for their queues: when some
  answer and none consumes the ``score`` queue (the local stack runs no score worker), the round
  scores its shards in its own process instead (same selection).
- When no shard finishes for ``timeout`` seconds (no worker consumes the ``score`` queue, or they
  all died), the round fails with a message that says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from al_loop.errors import AlLoopError
from al_loop.rounds.pool_round import ShardJob
from al_loop.rounds.pool_scoring import ShardResult, load_result
from annotator_bridge.worker.config import SCORE_QUEUE, SCORE_SHARD_TASK

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("annotator_bridge.worker")

__all__ = ["CeleryShardRunner", "ShardFailed", "record_shard_failure"]


class ShardFailed(AlLoopError):
    """A pool-scoring shard failed or never finished; the round fails with this message."""


def record_shard_failure(job: ShardJob, exc: BaseException) -> None:
    """Leave the shard's error where the waiting round finds it (no secret: the exception text only)."""
    try:
        job.failed_marker.write_text(f"{type(exc).__name__}: {exc}"[:2000])
    except OSError as err:
        log.error("could not record the failure of score shard %s of round %s: %s", job.shard, job.round_id, err)


class CeleryShardRunner:
    """Runs shard jobs as a Celery group on the ``score`` queue and waits for their result folders."""

    def __init__(self, app: Celery, *, timeout: float = 600.0, poll: float = 0.25, queue: str = SCORE_QUEUE,
                 inspect_timeout: float = 1.0) -> None:
        self.app = app
        self.inspect_timeout = inspect_timeout
        self.timeout = timeout
        self.poll = poll
        self.queue = queue

    def available(self) -> bool:
        """False only when workers answered and none of them consumes the score queue (e.g. the local stack's
        default and train workers): the round then scores its shards itself. No answer (a broker without
        remote control, every worker busy) counts as available, and the wait's timeout applies."""
        try:
            replies = self.app.control.inspect(timeout=self.inspect_timeout).active_queues()
        except Exception as exc:  # broker down or no broadcast support: let the send decide
            log.debug("could not ask the workers for their queues: %s", exc)
            return True
        if not replies:
            return True
        return any(q.get("name") == self.queue for queues in replies.values() for q in (queues or []))

    def __call__(self, jobs: Sequence[ShardJob], progress: Callable[[int], None]) -> list[ShardResult]:
        from celery import group

        for job in jobs:
            job.failed_marker.unlink(missing_ok=True)
        task = self.app.tasks[SCORE_SHARD_TASK]
        try:
            group(task.si(job.to_dict()).set(queue=self.queue, routing_key=self.queue) for job in jobs).apply_async()
        except Exception as exc:  # kombu OperationalError, redis ConnectionError ...
            raise ShardFailed(f"could not send the score shards ({type(exc).__name__}: {exc})") from exc
        log.info("round %s: %d score shards sent to queue %s", jobs[0].round_id if jobs else "?", len(jobs), self.queue)
        done: set[int] = set()
        last_change = time.monotonic()
        while len(done) < len(jobs):
            for i, job in enumerate(jobs):
                if i in done:
                    continue
                if job.failed_marker.exists():
                    raise ShardFailed(f"score shard {i + 1}/{len(jobs)} failed: {job.failed_marker.read_text()}")
                if (job.result_dir / "meta.json").exists():
                    done.add(i)
                    last_change = time.monotonic()
            progress(len(done))  # also the round's heartbeat
            if len(done) < len(jobs):
                if time.monotonic() - last_change > self.timeout:
                    raise ShardFailed(
                        f"{len(jobs) - len(done)} of {len(jobs)} score shards made no progress in {self.timeout:.0f} s;"
                        f" is a worker consuming the {self.queue!r} queue (al-loop worker --queues {self.queue})?"
                    )
                time.sleep(self.poll)
        return [load_result(job.result_dir) for job in jobs]
