"""Subscribers of the coordinator's events: ``swarmctl dashboard`` and any client that sends ``Subscribe``.

A client subscribes on its connection and from then on gets, until the connection closes:

- ``RunProgress`` as new results of the runs it follows arrive (all runs, or the one it
  named), at most every ``PROGRESS_INTERVAL_S`` per run, with the outcomes of those
  results and what each executor is running;
- ``RunList`` and ``ExecutorList`` every ``interval_s`` seconds: the rows ``ListRuns`` and
  ``ListExecutors`` return, so a subscriber's view is never older than that;
- ``CaseOutput`` pieces of running tests' captured output, if it asked for ``output``;
- ``ExecutorLogs`` with executors' own log lines, if it asked for ``logs``.

Frames go into the session's outbox, which its writer task empties. A subscriber that reads
slower than events arrive would make that outbox grow without bound, so past
``MAX_BACKLOG_FRAMES`` queued frames a subscriber gets no event frames until it catches up.
The dropped frames are counted, and the next ``RunList`` refreshes its view.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarmctl import protocol

if TYPE_CHECKING:
    from swarmctl.coordinator.node import Session

log = logging.getLogger(__name__)

MAX_BACKLOG_FRAMES = 1000
MIN_INTERVAL_S = 0.2  # the fastest a subscriber may ask for RunList and ExecutorList frames
MAX_INTERVAL_S = 60.0


@dataclass(slots=True)
class Subscription:
    run_id: str  # "" for every run
    output: bool
    logs: bool
    interval_s: float
    dropped: int = 0  # frames not sent because the subscriber's backlog was full


class EventHub:
    """The subscribed client sessions, and the frames each of them is sent."""

    def __init__(self) -> None:
        self.subscriptions: dict[Session, Subscription] = {}

    def subscribe(self, session: Session, request: protocol.Subscribe) -> Subscription:
        """Add or replace the session's subscription; the interval is clamped to the allowed range."""
        interval_s = min(max(float(request.interval_s), MIN_INTERVAL_S), MAX_INTERVAL_S)
        subscription = Subscription(request.run_id, request.output, request.logs, interval_s)
        self.subscriptions[session] = subscription
        log.info(
            "client %s subscribed to %s, every %.1fs%s%s", session.node_id, f"run {request.run_id}" if request.run_id else "every run",
            interval_s, ", with output" if request.output else "", ", with logs" if request.logs else "",
        )
        return subscription

    def unsubscribe(self, session: Session) -> None:
        subscription = self.subscriptions.pop(session, None)
        if subscription is not None and subscription.dropped:
            log.info("client %s unsubscribed; %d event frames were dropped while it fell behind", session.node_id, subscription.dropped)

    def following(self, run_id: str) -> list[Session]:
        """Return the sessions subscribed to ``run_id``'s progress.

        A session that submitted the run is left out: it gets the same frames as the run's client.
        """
        return [
            session for session, sub in self.subscriptions.items() if sub.run_id in ("", run_id) and run_id not in session.runs
        ]

    def progress(self, frame: protocol.RunProgress) -> None:
        for session in self.following(frame.run_id):
            self.send(session, frame)

    def output(self, chunks: Sequence[Sequence[Any]]) -> None:
        """Send live output pieces ``[run_id, shard_id, attempt, case_id, stream, time, text]`` to those who asked for them."""
        for session, subscription in self.subscriptions.items():
            if not subscription.output:
                continue
            matching = [list(chunk) for chunk in chunks if subscription.run_id in ("", chunk[0])]
            if matching:
                self.send(session, protocol.CaseOutput(matching))

    def logs(self, executor: str, lines: list[list[Any]]) -> None:
        frame = protocol.ExecutorLogs(executor, lines)
        for session, subscription in self.subscriptions.items():
            if subscription.logs:
                self.send(session, frame)

    def send(self, session: Session, frame: protocol.Message) -> None:
        """Queue ``frame`` for ``session`` unless its backlog is full."""
        subscription = self.subscriptions.get(session)
        if subscription is None:
            return
        if session.outbox.statistics().current_buffer_used >= MAX_BACKLOG_FRAMES:
            subscription.dropped += 1
            if subscription.dropped == 1 or subscription.dropped % 1000 == 0:
                log.warning(
                    "client %s reads events slower than they arrive: %d frames dropped so far", session.node_id, subscription.dropped
                )
            return
        session.send(frame)
