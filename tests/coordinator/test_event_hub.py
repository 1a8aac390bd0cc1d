"""Tests of swarmctl.coordinator.event_hub: who gets which event frames, and a slow subscriber's backlog."""

from __future__ import annotations

import math

import trio

from swarmctl import protocol
from swarmctl.coordinator.event_hub import MAX_BACKLOG_FRAMES, MIN_INTERVAL_S, EventHub
from swarmctl.coordinator.node import Session


def session(name: str) -> tuple[Session, trio.MemoryReceiveChannel]:
    send, receive = trio.open_memory_channel(math.inf)
    hello = protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, name, 0, {}, "test", "host", 1)
    return Session(peer=None, hello=hello, outbox=send, last_seen=0.0), receive


def received(receive: trio.MemoryReceiveChannel) -> list[protocol.Message]:
    frames = []
    while True:
        try:
            frames.append(receive.receive_nowait())
        except trio.WouldBlock:
            return frames


def progress(run_id: str) -> protocol.RunProgress:
    return protocol.RunProgress(run_id, "running", 2, 1, 1, [["t.py::a", "failed"]])


def output(run_id: str, text: str) -> list:
    return [run_id, 0, 1, "t.py::a", "stdout", 1.0, text]


def test_event_hub_progress_by_run() -> None:
    hub = EventHub()
    everything, everything_frames = session("all")
    one_run, one_run_frames = session("one")
    hub.subscribe(everything, protocol.Subscribe())
    hub.subscribe(one_run, protocol.Subscribe(run_id="run-2"))

    hub.progress(progress("run-1"))
    hub.progress(progress("run-2"))

    assert [frame.run_id for frame in received(everything_frames)] == ["run-1", "run-2"]
    assert [frame.run_id for frame in received(one_run_frames)] == ["run-2"]


def test_event_hub_skips_run_submitter() -> None:
    hub = EventHub()
    submitter, frames = session("submitter")
    submitter.runs.add("run-1")
    hub.subscribe(submitter, protocol.Subscribe())

    assert hub.following("run-1") == []
    assert hub.following("run-2") == [submitter]


def test_event_hub_output_only_when_asked() -> None:
    hub = EventHub()
    plain, plain_frames = session("plain")
    watcher, watcher_frames = session("watcher")
    hub.subscribe(plain, protocol.Subscribe())
    hub.subscribe(watcher, protocol.Subscribe(run_id="run-1", output=True))

    hub.output([output("run-1", "mine\n"), output("run-2", "other\n")])

    assert received(plain_frames) == []
    (frame,) = received(watcher_frames)
    assert isinstance(frame, protocol.CaseOutput)
    assert [chunk[-1] for chunk in frame.chunks] == ["mine\n"]


def test_event_hub_logs_only_when_asked() -> None:
    hub = EventHub()
    plain, plain_frames = session("plain")
    reader, reader_frames = session("reader")
    hub.subscribe(plain, protocol.Subscribe())
    hub.subscribe(reader, protocol.Subscribe(logs=True))

    hub.logs("local-1", [[1.0, "INFO", "swarmctl.executor", "started"]])

    assert received(plain_frames) == []
    assert received(reader_frames) == [protocol.ExecutorLogs("local-1", [[1.0, "INFO", "swarmctl.executor", "started"]])]


def test_event_hub_drops_frames_past_backlog() -> None:
    hub = EventHub()
    slow, frames = session("slow")
    hub.subscribe(slow, protocol.Subscribe())

    for _ in range(MAX_BACKLOG_FRAMES + 5):
        hub.progress(progress("run-1"))

    assert len(received(frames)) == MAX_BACKLOG_FRAMES
    assert hub.subscriptions[slow].dropped == 5
    hub.progress(progress("run-1"))  # the backlog was read: frames flow again
    assert len(received(frames)) == 1


def test_event_hub_clamps_interval() -> None:
    hub = EventHub()
    eager, _ = session("eager")

    subscription = hub.subscribe(eager, protocol.Subscribe(interval_s=0.0))

    assert subscription.interval_s == MIN_INTERVAL_S


def test_event_hub_unsubscribe() -> None:
    hub = EventHub()
    gone, frames = session("gone")
    hub.subscribe(gone, protocol.Subscribe())

    hub.unsubscribe(gone)
    hub.progress(progress("run-1"))

    assert received(frames) == []
    assert hub.subscriptions == {}
