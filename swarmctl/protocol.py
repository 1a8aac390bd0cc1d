"""Messages of the data plane and their msgpack encoding.

Every frame is one msgpack map ``{"k": KIND, ...fields}``. A frame of at least
``COMPRESS_MIN_BYTES`` travels zlib-compressed behind the byte ``COMPRESSED_MARK`` (0xc1, a
byte that msgpack never uses) when that saves a tenth of it or more. The first frame on a connection is
a ``Hello`` that carries ``PROTOCOL_VERSION``; the coordinator answers ``Welcome`` or
``Reject``. A frame larger than ``MAX_FRAME_BYTES``, of an unknown kind, with missing or
unknown fields, or with a field of the wrong type (``wire_types.check_fields``) raises ``ProtocolError``: a peer of another version fails loudly at the first
frame instead of misreading later ones.

Strings are packed with ``surrogatepass``: pytest turns a file name that is not valid UTF-8
into a node id with lone surrogates, and such an id must survive the trip.

Results travel as plain dicts (``CaseResult.to_wire()``), so that this module stays the one
place that knows the wire shape of every message.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from swarmctl.errors import ProtocolError
from swarmctl.wire_types import check_fields

# Raised whenever a message gains or loses a field, or a kind is added. ``decode`` rejects unknown
# fields and kinds, so peers of different versions must be stopped at the hello, with a message
# that gives the reason.
PROTOCOL_VERSION = 6

# A frame carries a batch of results with their captured output. Output is capped per test
# on the executor (pytest_runner.OUTPUT_CAP_CHARS), and batches are cut at BATCH_BYTES, so a
# frame stays far below this limit. The limit only stops a broken or hostile peer.
MAX_FRAME_BYTES = 16 * 1024 * 1024
BATCH_BYTES = 1024 * 1024
BUNDLE_CHUNK_BYTES = 1024 * 1024

# Large frames (results with long output, final results sent to a client) are compressed at
# zlib level 1, which takes a few milliseconds per megabyte. Bundle chunks are gzip already.
COMPRESS_MIN_BYTES = 64 * 1024
COMPRESSED_MARK = b"\xc1"
INCOMPRESSIBLE_KINDS = frozenset({"bundle_chunk"})

# A Reject whose reason starts with this is about the peer's token, not the protocol.
AUTH_FAILED = "authentication failed:"
# A Reject whose reason starts with this comes from a coordinator-eligible node during an
# election: no node leads yet, so the peer tries again shortly.
NO_LEADER = "no leader elected:"

ROLE_EXECUTOR = "executor"
# HTTP API: the header of a report response that names its run, for requests that give `last` or `last~N`.
RUN_ID_HEADER = "X-Swarmctl-Run-Id"

ROLE_CLIENT = "client"
ROLE_VOTER = "voter"  # another coordinator-eligible node: consensus messages only


@dataclass(frozen=True, slots=True)
class SuiteSpec:
    """The bundle of a suite and how an executor runs it."""

    kind: str  # "pytest" or "command"
    bundle: str  # sha256 of the bundle archive
    name: str  # the suite folder as the user named it, for display
    python: str = "python3"  # the suite's interpreter, resolved on the executor's PATH
    pytest_args: tuple[str, ...] = ()
    timeout: float | None = None  # per-test limit in seconds, enforced by the executor

    def to_wire(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pytest_args"] = list(self.pytest_args)
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> SuiteSpec:
        values = dict(data)
        values["pytest_args"] = tuple(values.get("pytest_args") or ())
        return cls(**values)


class Message:
    """Base of every frame; ``KIND`` names it on the wire."""

    KIND: ClassVar[str]


_REGISTRY: dict[str, type[Message]] = {}


def _message(kind: str):
    def register(cls):
        cls.KIND = kind
        _REGISTRY[kind] = cls
        return cls

    return register


# --- connection set-up -------------------------------------------------------------------


@_message("hello")
@dataclass(frozen=True, slots=True)
class Hello(Message):
    version: int
    role: str
    node_id: str
    slots: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    software: str = ""
    hostname: str = ""
    pid: int = 0
    resources: dict[str, Any] = field(default_factory=dict)  # executors: ResourceMonitor.sample()
    held: list[list[Any]] = field(default_factory=list)  # executors: [run_id, shard_id, attempt] still running
    gossip: list[Any] | None = None  # [host, port] of the node's gossip socket, when it gossips
    # A JWT from swarmctl.tokens, required by a coordinator that has a cluster secret. Left out
    # of repr(), so that logging a hello never logs the token.
    token: str = field(default="", repr=False)


@_message("welcome")
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    version: int
    coordinator_id: str
    term: int
    heartbeat_s: float = 1.0  # how often an executor reports; its leases last several intervals
    lease_s: float = 5.0
    gossip: list[Any] | None = None  # [host, port] of the coordinator's gossip socket, to join through


@_message("reject")
@dataclass(frozen=True, slots=True)
class Reject(Message):
    """The node does not serve this peer; with ``redirect`` (HOST:PORT), the peer tries that node."""

    reason: str
    redirect: str = ""


@_message("error")
@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """A request failed; ``code`` follows pytest's exit codes (4 usage error, 3 internal)."""

    message: str
    code: int = 3


# --- executor <-> coordinator ------------------------------------------------------------


@_message("heartbeat")
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """An executor's periodic report; it renews the lease of every shard attempt in ``held``."""

    free_slots: int
    load: float = 0.0  # load score from 0 (idle machine) up; 1.0 means one of CPU or memory is saturated
    resources: dict[str, Any] = field(default_factory=dict)
    held: list[list[Any]] = field(default_factory=list)  # [run_id, shard_id, attempt]


@_message("heartbeat_ack")
@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    """The coordinator's reply to a heartbeat, so an executor notices a coordinator that went silent."""

    term: int


@_message("drain")
@dataclass(frozen=True, slots=True)
class Drain(Message):
    """Finish the shards running now, then leave; the coordinator sends no new work."""

    reason: str


@_message("draining")
@dataclass(frozen=True, slots=True)
class Draining(Message):
    """The executor is stopping (SIGTERM): send it no new work and take back its unstarted tests."""

    reason: str


@_message("leave")
@dataclass(frozen=True, slots=True)
class Leave(Message):
    """The executor leaves on purpose; any shard still assigned to it goes back to the queue."""

    reason: str


@_message("prepare")
@dataclass(frozen=True, slots=True)
class PrepareSuite(Message):
    """Warm the slots' workers for a run; ``collect`` asks this executor for the case list."""

    run_id: str
    suite: dict[str, Any]
    collect: bool


@_message("collected")
@dataclass(frozen=True, slots=True)
class Collected(Message):
    """The collection of a run: node ids in order, plus collection-time results.

    ``exit_code`` is non-zero when pytest stopped before it could collect (4 for a usage
    error, 3 for an internal error); ``error`` then contains its output.
    """

    run_id: str
    case_ids: list[str]
    collect_results: list[dict[str, Any]]
    deselected: int = 0
    exit_code: int = 0
    error: str = ""
    dependencies: dict[str, list[str]] | None = None  # node id -> node ids it depends on
    requirements: dict[str, dict[str, str]] | None = None  # node id -> labels its executor must have


@_message("assign")
@dataclass(frozen=True, slots=True)
class Assign(Message):
    run_id: str
    shard_id: int
    attempt: int
    term: int
    suite: dict[str, Any]
    case_ids: list[str]
    collection_digest: str  # sha256 of the run's collected node ids, to compare with the worker's


@_message("results")
@dataclass(frozen=True, slots=True)
class ResultBatch(Message):
    """Results in the order they finished; each item is ``[run_id, shard_id, attempt, result]``."""

    seq: int
    items: list[list[Any]]


@_message("ack")
@dataclass(frozen=True, slots=True)
class ResultAck(Message):
    """The batch ``seq`` is durably stored; the executor may forget it."""

    seq: int


@_message("log_batch")
@dataclass(frozen=True, slots=True)
class LogBatch(Message):
    """Log records of the executor's own loggers, oldest first. The coordinator sends no acknowledgement.

    Each line is ``[unix_time, level_name, logger_name, message]``.
    """

    lines: list[list[Any]]


@_message("case_output")
@dataclass(frozen=True, slots=True)
class CaseOutput(Message):
    """Captured output of running tests, sent while they run. The coordinator sends no acknowledgement.

    Each chunk is ``[run_id, shard_id, attempt, case_id, stream, unix_time, text]``, with
    ``stream`` being ``stdout`` or ``stderr``. The final result carries the authoritative copy.
    """

    chunks: list[list[Any]]


@_message("shard_done")
@dataclass(frozen=True, slots=True)
class ShardDone(Message):
    run_id: str
    shard_id: int
    attempt: int
    error: str = ""


@_message("release_tests")
@dataclass(frozen=True, slots=True)
class ReleaseTests(Message):
    """Give back up to ``count`` unstarted tests of a running shard, for an idle executor."""

    run_id: str
    shard_id: int
    attempt: int
    count: int


@_message("tests_released")
@dataclass(frozen=True, slots=True)
class TestsReleased(Message):
    """The executor gave back these unstarted tests of a running shard."""

    run_id: str
    shard_id: int
    attempt: int
    case_ids: list[str]


@_message("cancel_shard")
@dataclass(frozen=True, slots=True)
class CancelShard(Message):
    """Stop a shard. With ``interrupt``, the running test is stopped like a timed-out one and
    reported as an error with ``reason``, and the executor replies with ``ShardDone``."""

    run_id: str
    shard_id: int
    attempt: int
    reason: str
    interrupt: bool = False


# --- bundles ---------------------------------------------------------------------------


@_message("bundle_query")
@dataclass(frozen=True, slots=True)
class BundleQuery(Message):
    digest: str
    size: int = 0


@_message("bundle_status")
@dataclass(frozen=True, slots=True)
class BundleStatus(Message):
    digest: str
    present: bool


@_message("bundle_fetch")
@dataclass(frozen=True, slots=True)
class BundleFetch(Message):
    digest: str


@_message("bundle_chunk")
@dataclass(frozen=True, slots=True)
class BundleChunk(Message):
    digest: str
    data: bytes
    last: bool


# --- client <-> coordinator --------------------------------------------------------------


@_message("submit")
@dataclass(frozen=True, slots=True)
class SubmitRun(Message):
    suite: dict[str, Any]
    strategy: str = "even"
    case_ids: list[str] | None = None  # given for command suites, whose manifest the client read
    deadline_s: float | None = None  # run-level limit in seconds from submission
    priority: int = 0  # higher runs first
    retries: int = 0  # extra attempts for a failed or errored test
    start_at: float | None = None  # Unix time before which the run waits
    durations: dict[str, float] | None = None  # expected seconds per case id, imported by the client
    dependencies: dict[str, list[str]] | None = None  # command suites: case id -> ids it depends on
    group: str = "none"  # none, module, class or file: tests kept together in one shard
    requirements: dict[str, dict[str, str]] | None = None  # command suites: case id -> required labels


@_message("accepted")
@dataclass(frozen=True, slots=True)
class RunAccepted(Message):
    run_id: str


@_message("progress")
@dataclass(frozen=True, slots=True)
class RunProgress(Message):
    """How far a run is, with the outcomes recorded since the last progress frame.

    The ETA fields are ``ProgressTracker.recent_estimate`` when the frame was sent: estimated
    at most every second, and aged by the time since in the frames between.
    """

    run_id: str
    status: str
    total: int
    done: int
    executors: int
    outcomes: list[list[str]]  # [case_id, outcome]
    eta_s: float | None = None  # seconds until the run ends; None when nothing to estimate from
    eta_low_s: float | None = None  # the range of that estimate
    eta_high_s: float | None = None
    eta_basis: str = "unknown"  # durations (history, calibrated by this run), rate (this run only) or unknown
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> final results so far
    # One row per executor at work on the run: {"executor", "shards", "current", "remaining"}.
    # Executors run a shard's tests in order, so each shard's first test without a result is
    # a running one; "current" lists those. "remaining" counts the tests without a result in
    # the executor's shards.
    activity: list[dict[str, Any]] = field(default_factory=list)


@_message("run_results")
@dataclass(frozen=True, slots=True)
class RunResults(Message):
    """Part of a finished run's results, in collection order; ``RunComplete`` follows the last part.

    Frames after the final results carry the failed attempts of retried tests before their
    final result (``--retries``), oldest first, in ``earlier_attempts`` instead.
    """

    run_id: str
    results: list[dict[str, Any]]
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)


@_message("complete")
@dataclass(frozen=True, slots=True)
class RunComplete(Message):
    run_id: str
    exit_code: int
    wall_s: float
    started_at: float
    deselected: int
    error: str
    executors: list[str]
    duplicates: int = 0
    fenced: int = 0


@_message("watch_run")
@dataclass(frozen=True, slots=True)
class WatchRun(Message):
    """Follow a run submitted on an earlier connection, as after a failover.

    For an active run the client gets what a submitting client gets from then on; for a
    finished run, its results and ``RunComplete`` at once.
    """

    run_id: str


@_message("cancel_run")
@dataclass(frozen=True, slots=True)
class CancelRun(Message):
    run_id: str
    reason: str


@_message("run_cancelled")
@dataclass(frozen=True, slots=True)
class RunCancelled(Message):
    """The run was active and is now interrupted; its clients get ``RunComplete`` too."""

    run_id: str


@_message("list_executors")
@dataclass(frozen=True, slots=True)
class ListExecutors(Message):
    pass


@_message("executors")
@dataclass(frozen=True, slots=True)
class ExecutorList(Message):
    """Every registered executor, and those that left recently, as ``ExecutorRecord.describe`` dicts."""

    executors: list[dict[str, Any]]


@_message("list_runs")
@dataclass(frozen=True, slots=True)
class ListRuns(Message):
    pass


@_message("runs")
@dataclass(frozen=True, slots=True)
class RunList(Message):
    """The coordinator's active runs, then its most recently finished ones, as plain dicts.

    ``ClientMixin._list_runs`` builds them, and ``swarmctl dashboard`` shows them.
    """

    runs: list[dict[str, Any]]


@_message("subscribe")
@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    """Ask for a stream of events on this connection until it closes; ``coordinator/event_hub.py`` lists them."""

    run_id: str = ""  # only this run's progress and output; "" for every run
    output: bool = False  # also CaseOutput pieces of running tests
    logs: bool = False  # also ExecutorLogs lines
    interval_s: float = 1.0  # seconds between RunList and ExecutorList frames


@_message("executor_logs")
@dataclass(frozen=True, slots=True)
class ExecutorLogs(Message):
    """An executor's ``LogBatch`` lines, passed on to subscribers."""

    executor: str
    lines: list[list[Any]]


@_message("revoke_token")
@dataclass(frozen=True, slots=True)
class RevokeToken(Message):
    """Reject the token with this id from now on, and close its connections (role admin)."""

    token_id: str


@_message("token_revoked")
@dataclass(frozen=True, slots=True)
class TokenRevoked(Message):
    token_id: str
    connections_closed: int


@_message("control_executor")
@dataclass(frozen=True, slots=True)
class ControlExecutor(Message):
    action: str  # drain, cordon or uncordon
    executor_id: str


@_message("executor_controlled")
@dataclass(frozen=True, slots=True)
class ExecutorControlled(Message):
    executor_id: str
    state: str


@_message("gossip_key_request")
@dataclass(frozen=True, slots=True)
class GossipKeyRequest(Message):
    """Ask the coordinator (admin) to ``list``, ``install``, ``use`` or ``remove`` a gossip key generation.

    Generation 0 is the key derived from the cluster secret as before. Generation N is derived
    from the same secret with the purpose ``gossip/N``, so no key crosses the network.
    """

    action: str
    generation: int = -1  # for use and remove


@_message("gossip_keyring")
@dataclass(frozen=True, slots=True)
class GossipKeyring(Message):
    """The gossip key generations every node accepts, and the one that seals.

    The coordinator sends it to executors after their Welcome and after every change, and
    each executor sends it back once applied. It is also the reply to a GossipKeyRequest.
    """

    generations: list[int]
    primary: int


def encode(message: Message) -> bytes:
    data = {"k": message.KIND}
    for f in dataclasses.fields(message):
        data[f.name] = getattr(message, f.name)
    frame = msgpack.packb(data, use_bin_type=True, unicode_errors="surrogatepass")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"{message.KIND} frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"
        )
    if len(frame) >= COMPRESS_MIN_BYTES and message.KIND not in INCOMPRESSIBLE_KINDS:
        packed = zlib.compress(frame, 1)
        if len(packed) * 10 <= len(frame) * 9:
            return COMPRESSED_MARK + packed
    return frame


def _inflate(frame: bytes) -> bytes:
    """Return the msgpack frame inside a compressed frame; raise ProtocolError past MAX_FRAME_BYTES."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(frame[len(COMPRESSED_MARK):], MAX_FRAME_BYTES + 1)
    except zlib.error as exc:
        raise ProtocolError(f"malformed frame: its compressed data is invalid: {exc}") from None
    if len(data) > MAX_FRAME_BYTES or inflater.unconsumed_tail:
        raise ProtocolError(f"compressed frame inflates past the limit of {MAX_FRAME_BYTES} bytes")
    if not inflater.eof:
        raise ProtocolError("malformed frame: its compressed data is truncated")
    return data


def decode(frame: bytes) -> Message:
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")
    if frame[:1] == COMPRESSED_MARK:
        frame = _inflate(frame)
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=True, unicode_errors="surrogatepass")
    except (ValueError, msgpack.UnpackException) as exc:
        # msgpack gives no message for some errors, such as nesting deeper than it allows.
        raise ProtocolError(f"malformed frame: {str(exc) or type(exc).__name__}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("k"), str):
        raise ProtocolError("malformed frame: expected a map with a string field 'k'")

    kind = data.pop("k")
    return from_fields(kind, data)


def from_fields(kind: str, data: dict[str, Any]) -> Message:
    """Build the message ``kind`` from its fields, as a frame or an event of the HTTP API's streams carries them."""
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ProtocolError(f"{kind} frame has unknown fields {sorted(unknown)}")
    check_fields(kind, cls, data)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ProtocolError(f"{kind} frame is missing fields: {exc}") from exc


# --- coordinator-eligible nodes ---------------------------------------------------------


@_message("consensus")
@dataclass(frozen=True, slots=True)
class ConsensusFrame(Message):
    """A message between voters, as ``swarmctl.cluster.consensus.wire.to_wire`` encodes it."""

    payload: dict[str, Any]


@_message("consensus_part")
@dataclass(frozen=True, slots=True)
class ConsensusPart(Message):
    """A piece of a consensus message too large for one frame, such as a snapshot of a large ``state.db``.

    The pieces of one message travel in order on one connection. Joined, they are the msgpack
    encoding of its ``ConsensusFrame`` payload, and ``last`` marks the final piece.
    """

    data: bytes
    last: bool


@_message("node_status")
@dataclass(frozen=True, slots=True)
class NodeStatus(Message):
    """One node's view of the cluster.

    ``state`` is leader, follower, pre-candidate or candidate, or ``single`` for a
    coordinator without peers. ``voters`` has one map per voter with ``address``, ``state``
    and, on the leader, ``match`` (its last replicated index) and ``lag`` (entries behind).
    """

    node_id: str
    state: str
    term: int
    leader: str
    commit_index: int
    applied_index: int
    voters: list[dict[str, Any]] = field(default_factory=list)

