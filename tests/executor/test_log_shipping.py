"""Tests of the executor's log shipping: the bounded buffer, its batches, and the send loop."""

from __future__ import annotations

import logging
from pathlib import Path

import trio
import trio.testing

from swarmctl import protocol
from swarmctl.executor import log_shipping
from swarmctl.executor.log_shipping import BATCH_LINES, LogBuffer, OutputBuffer, shipping
from swarmctl.executor.node import Executor


def emit(buffer: LogBuffer, message: str, level: int = logging.INFO, name: str = "swarmctl.test") -> None:
    buffer.handle(logging.LogRecord(name, level, __file__, 1, message, None, None))


def test_log_buffer_keeps_line_shape() -> None:
    buffer = LogBuffer()
    emit(buffer, "started", logging.WARNING)

    batch = buffer.take_batch()

    assert batch is not None
    [[created, level, logger, message]] = batch.lines
    assert isinstance(created, float)
    assert level == "WARNING"
    assert logger == "swarmctl.test"
    assert message == "started"


def test_log_buffer_ignores_debug() -> None:
    buffer = LogBuffer()
    logger = logging.getLogger("swarmctl.test_debug")
    logger.setLevel(logging.DEBUG)
    try:
        with buffer.installed():
            logger.debug("noise")
    finally:
        logger.setLevel(logging.NOTSET)

    assert len(buffer) == 0
    assert buffer.take_batch() is None


def test_log_buffer_drops_oldest_beyond_bound() -> None:
    buffer = LogBuffer(max_lines=10, clock=lambda: 99.0)
    for number in range(25):
        emit(buffer, f"line {number}")

    assert len(buffer) == 10
    assert buffer.dropped == 15

    batch = buffer.take_batch()

    assert batch is not None
    assert batch.lines[0] == [99.0, "WARNING", log_shipping.__name__, "15 log lines dropped"]
    assert [line[3] for line in batch.lines[1:]] == [f"line {number}" for number in range(15, 25)]
    assert buffer.dropped == 0


def test_log_buffer_default_bound() -> None:
    buffer = LogBuffer()
    for number in range(log_shipping.MAX_LINES + 3):
        emit(buffer, f"line {number}")

    assert len(buffer) == log_shipping.MAX_LINES
    assert buffer.dropped == 3


def test_log_buffer_batches_at_most_500() -> None:
    buffer = LogBuffer(max_lines=1000)
    for number in range(1200):
        emit(buffer, f"line {number}")

    batches = buffer.take_all()

    assert BATCH_LINES == 500
    assert [len(batch.lines) for batch in batches] == [500, 500, 1]  # the drop line, then 1000 lines
    assert batches[0].lines[0][3] == "200 log lines dropped"
    assert len(buffer) == 0


def test_log_buffer_skips_records_while_shipping() -> None:
    buffer = LogBuffer()
    with shipping():
        emit(buffer, "logged by the send itself")
    emit(buffer, "kept")

    batch = buffer.take_batch()

    assert batch is not None
    assert [line[3] for line in batch.lines] == ["kept"]


def test_log_buffer_installed_on_swarmctl_logger() -> None:
    buffer = LogBuffer()
    with buffer.installed():
        logging.getLogger("swarmctl.executor.demo").warning("inside %d", 1)
        logging.getLogger("some_test_library").warning("not ours")
    logging.getLogger("swarmctl.executor.demo").warning("after removal")

    batch = buffer.take_batch()

    assert batch is not None
    assert [line[3] for line in batch.lines] == ["inside 1"]


def test_log_batch_round_trip() -> None:
    message = protocol.LogBatch([[1.5, "INFO", "swarmctl.executor.node", "caf\u00e9 \udcff"]])

    decoded = protocol.decode(protocol.encode(message))

    assert decoded == message


class RecordingPeer:
    name = "fake-coordinator"

    def __init__(self) -> None:
        self.sent: list[protocol.Message] = []

    async def send(self, message: protocol.Message) -> None:
        logging.getLogger("swarmctl.executor.fake_peer").info("sending %s", message.KIND)
        self.sent.append(message)


async def test_send_loop_puts_results_before_log_batches(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    executor = Executor(executor_id="exec-t", join=[("127.0.0.1", 9)], slots=0, labels={}, data_dir=tmp_path)
    for number in range(1200):
        emit(executor.log_buffer, f"line {number}")
    executor.send_result("run-1", 0, 1, {"case_id": "test_a.py::test_a", "outcome": "passed"})
    peer = RecordingPeer()

    with executor.log_buffer.installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor._send_loop, peer)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    kinds = [message.KIND for message in peer.sent]
    assert kinds[0] == "results"
    log_batches = [message for message in peer.sent if isinstance(message, protocol.LogBatch)]
    assert all(len(batch.lines) <= BATCH_LINES for batch in log_batches)
    shipped = [line[3] for batch in log_batches for line in batch.lines]
    assert shipped[:1200] == [f"line {number}" for number in range(1200)]
    assert not any(message.startswith("sending log_batch") for message in shipped)  # no feedback loop
    assert len(executor.log_buffer) == 0


# --- live test output ------------------------------------------------------------------------


def test_output_buffer_frames_keep_order() -> None:
    buffer = OutputBuffer(clock=lambda: 5.0)
    buffer.add("run-1", 0, 1, "t.py::a", "stdout", "one\n")
    buffer.add("run-1", 0, 1, "t.py::a", "stderr", "two\n")

    frame = buffer.take_frame()

    assert frame is not None
    assert frame.chunks == [["run-1", 0, 1, "t.py::a", "stdout", 5.0, "one\n"], ["run-1", 0, 1, "t.py::a", "stderr", 5.0, "two\n"]]
    assert buffer.take_frame() is None
    assert buffer.chars == 0


def test_output_buffer_cuts_frames_by_size() -> None:
    buffer = OutputBuffer()
    for i in range(5):
        buffer.add("run-1", 0, 1, "t.py::a", "stdout", f"{i}" * 40)

    sizes = []
    while (frame := buffer.take_frame(max_chars=100)) is not None:
        sizes.append(len(frame.chunks))

    assert sizes == [2, 2, 1]


def test_output_buffer_drops_oldest_when_full() -> None:
    buffer = OutputBuffer(max_chars=10)
    for text in ("aaaa", "bbbb", "cccc"):
        buffer.add("run-1", 0, 1, "t.py::a", "stdout", text)

    frame = buffer.take_frame()

    assert frame is not None
    assert [chunk[-1] for chunk in frame.chunks] == ["bbbb", "cccc"]
    assert buffer.dropped_chars == 4


def test_output_buffer_keeps_one_oversized_piece() -> None:
    buffer = OutputBuffer(max_chars=3)
    buffer.add("run-1", 0, 1, "t.py::a", "stdout", "longer than the limit")

    frame = buffer.take_frame(max_chars=5)

    assert frame is not None
    assert [chunk[-1] for chunk in frame.chunks] == ["longer than the limit"]
