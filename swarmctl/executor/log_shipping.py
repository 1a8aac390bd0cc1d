"""Buffer the executor's own log records and its tests' live output for the send loop.

``LogBuffer`` is a ``logging.Handler`` on the ``swarmctl`` logger. It keeps at most
``max_lines`` records in memory and drops the oldest beyond that, because a coordinator that
is away must not make the executor run out of memory. The number of dropped records goes out
as one synthetic WARNING line with the next batch.

Records are emitted by any thread (``trio.to_thread`` workers log too), so the buffer is
guarded by the handler's lock, and ``notify`` must be safe to call from any thread.

Records logged while the executor sends a ``LogBatch`` are not buffered: ``shipping()``
marks the sending task, so a send that logs cannot feed the buffer it is draining.

NOTE: the handler sees every ``swarmctl.*`` record of its process. Where executors share a
process with a coordinator or with each other (in-process tests), each ships all of them.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator

from swarmctl import protocol

MAX_LINES = 10_000  # records waiting to be sent, beyond which the oldest are dropped
BATCH_LINES = 500  # records per LogBatch frame
LOGGER_NAME = "swarmctl"  # the executor ships only its own loggers, never a test's

_shipping = contextvars.ContextVar("log_shipping", default=False)


@contextlib.contextmanager
def shipping() -> Iterator[None]:
    """Mark the current task as sending logs, so that its own records are not buffered."""
    token = _shipping.set(True)
    try:
        yield
    finally:
        _shipping.reset(token)


class LogBuffer(logging.Handler):
    """Log records of level INFO and above, waiting to be sent as ``[time, level, logger, message]``."""

    def __init__(
        self,
        *,
        max_lines: int = MAX_LINES,
        notify: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(logging.INFO)
        self.max_lines = max_lines
        self.notify = notify  # called after each buffered record, from the emitting thread
        self.clock = clock
        self.lines: collections.deque[list] = collections.deque()
        self.dropped = 0  # records dropped since the last batch was taken

    def emit(self, record: logging.LogRecord) -> None:
        if _shipping.get():
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # noqa: BLE001  (as logging.StreamHandler does: a bad record must not raise into its caller)
            self.handleError(record)
            return
        # handle() holds self.lock around emit, so the deque and the count change together.
        if len(self.lines) >= self.max_lines:
            self.lines.popleft()
            self.dropped += 1
        self.lines.append([record.created, record.levelname, record.name, message])
        if self.notify is not None:
            self.notify()

    def __len__(self) -> int:
        return len(self.lines)

    def take_batch(self, max_lines: int = BATCH_LINES) -> protocol.LogBatch | None:
        """Remove and return up to ``max_lines`` of the oldest records, or None when there are none."""
        with self.lock:
            lines: list[list] = []
            if self.dropped:
                lines.append([self.clock(), "WARNING", __name__, f"{self.dropped} log lines dropped"])
                self.dropped = 0
            while self.lines and len(lines) < max_lines:
                lines.append(self.lines.popleft())
        return protocol.LogBatch(lines) if lines else None

    def take_all(self) -> list[protocol.LogBatch]:
        """Remove every buffered record, as batches of at most ``BATCH_LINES`` records."""
        batches = []
        while (batch := self.take_batch()) is not None:
            batches.append(batch)
        return batches

    @contextlib.contextmanager
    def installed(self, logger_name: str = LOGGER_NAME) -> Iterator[LogBuffer]:
        """Attach this handler to ``logger_name`` for the duration of the block."""
        logger = logging.getLogger(logger_name)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)


MAX_PENDING_OUTPUT_CHARS = 4 * 1024 * 1024  # live test output waiting to be sent, beyond which the oldest is dropped
OUTPUT_FRAME_CHARS = 512 * 1024  # characters of output per CaseOutput frame


class OutputBuffer:
    """Pieces of running tests' captured output, waiting to be sent as ``CaseOutput`` frames.

    Live output is for watching: the final result carries the test's output in any case.
    So a backlog beyond ``max_chars`` drops the oldest pieces, counted in ``dropped_chars``,
    and a frame lost with the connection is not sent again.
    """

    def __init__(self, *, max_chars: int = MAX_PENDING_OUTPUT_CHARS, clock: Callable[[], float] = time.time) -> None:
        self.max_chars = max_chars
        self.clock = clock
        self.chunks: collections.deque[list] = collections.deque()
        self.chars = 0
        self.dropped_chars = 0

    def __len__(self) -> int:
        return len(self.chunks)

    def add(self, run_id: str, shard_id: int, attempt: int, case_id: str, stream: str, text: str) -> None:
        self.chunks.append([run_id, shard_id, attempt, case_id, stream, self.clock(), text])
        self.chars += len(text)
        while self.chars > self.max_chars and len(self.chunks) > 1:
            dropped = self.chunks.popleft()
            self.chars -= len(dropped[-1])
            self.dropped_chars += len(dropped[-1])

    def take_frame(self, max_chars: int = OUTPUT_FRAME_CHARS) -> protocol.CaseOutput | None:
        """Remove and return the oldest pieces, up to about ``max_chars``, or None when there are none."""
        chunks: list[list] = []
        size = 0
        while self.chunks and (not chunks or size + len(self.chunks[0][-1]) <= max_chars):
            chunk = self.chunks.popleft()
            self.chars -= len(chunk[-1])
            size += len(chunk[-1])
            chunks.append(chunk)
        return protocol.CaseOutput(chunks) if chunks else None
