"""Commands: the only way coordinator state changes.

The leader decides a command (with the time and ids already filled in, so that applying it is
deterministic), appends it to the command log and applies it to its SQLite state. A standby
that applies the same log in the same order ends with the same state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from swarmctl.errors import StoreError


class Command:
    KIND: ClassVar[str]


_REGISTRY: dict[str, type[Command]] = {}


def _command(kind: str):
    def register(cls):
        cls.KIND = kind
        _REGISTRY[kind] = cls
        return cls

    return register


@_command("run_submitted")
@dataclass(frozen=True, slots=True)
class RunSubmitted(Command):
    run_id: str
    at: float
    suite: dict[str, Any]
    strategy: str
    case_ids: list[str] | None  # known at submission for command suites
    deadline_at: float | None = None  # Unix time after which unfinished tests are reported not run
    priority: int = 0
    retries: int = 0
    start_at: float | None = None  # Unix time before which the run waits
    durations: dict[str, float] | None = None  # imported expected seconds per case, for planning
    dependencies: dict[str, list[str]] | None = None  # command suites: case id -> ids it depends on
    group: str = "none"
    requirements: dict[str, dict[str, str]] | None = None  # command suites: case id -> required labels


@_command("run_collected")
@dataclass(frozen=True, slots=True)
class RunCollected(Command):
    """The run's cases: node ids to run, plus collection-time results (module skips, errors)."""

    run_id: str
    at: float
    case_ids: list[str]
    collect_results: list[dict[str, Any]]
    deselected: int
    executor: str
    dependencies: dict[str, list[str]] | None = None  # node id -> node ids it depends on
    requirements: dict[str, dict[str, str]] | None = None  # node id -> labels its executor must have


@_command("shards_planned")
@dataclass(frozen=True, slots=True)
class ShardsPlanned(Command):
    run_id: str
    shards: list[list[int]]  # case indexes per shard


@_command("shard_assigned")
@dataclass(frozen=True, slots=True)
class ShardAssigned(Command):
    run_id: str
    shard_id: int
    attempt: int
    executor: str
    term: int
    at: float


@_command("results_recorded")
@dataclass(frozen=True, slots=True)
class ResultsRecorded(Command):
    """Results of one batch; each item is ``[run_id, shard_id, attempt, executor, result]``."""

    at: float
    items: list[list[Any]]


@_command("shard_finished")
@dataclass(frozen=True, slots=True)
class ShardFinished(Command):
    run_id: str
    shard_id: int
    attempt: int
    at: float


@_command("shard_requeued")
@dataclass(frozen=True, slots=True)
class ShardRequeued(Command):
    """Put back the cases of a shard attempt that have no result yet, as a new attempt.

    ``lost`` is true when the executor failed the attempt (died, lease lapsed, left mid-shard),
    and false when the cases were given back on purpose (work stealing, a draining executor).
    Results that arrive later from the ended attempt are fenced either way.
    """

    run_id: str
    shard_id: int
    attempt: int
    reason: str
    at: float
    lost: bool = True


@_command("token_revoked")
@dataclass(frozen=True, slots=True)
class TokenRevoked(Command):
    """Reject an access token (by its ``jti``) from now on, across restarts."""

    token_id: str
    at: float


@_command("gossip_keyring_changed")
@dataclass(frozen=True, slots=True)
class GossipKeyringChanged(Command):
    """Set the gossip key generations that nodes accept and the one that seals, across restarts."""

    generations: list[int]
    primary: int
    at: float


@_command("executor_cordoned")
@dataclass(frozen=True, slots=True)
class ExecutorCordoned(Command):
    """Stop (``cordoned``) or resume giving new work to an executor, across restarts."""

    executor_id: str
    cordoned: bool
    at: float


@_command("retry_planned")
@dataclass(frozen=True, slots=True)
class RetryPlanned(Command):
    """A new shard that runs failed cases again once ``not_before`` has passed."""

    run_id: str
    shard_id: int
    cases: list[int]
    not_before: float
    avoid: str | None  # the executor where they failed, used only when no other is free


@_command("tests_split")
@dataclass(frozen=True, slots=True)
class TestsSplit(Command):
    """Unstarted cases move from a running shard into a new queued shard (for an idle slot)."""

    run_id: str
    shard_id: int
    new_shard_id: int
    cases: list[int]


@_command("run_finished")
@dataclass(frozen=True, slots=True)
class RunFinished(Command):
    run_id: str
    at: float
    status: str  # finished, interrupted, failed
    exit_code: int
    error: str


def encode_command(command: Command) -> tuple[str, bytes]:
    body = {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}
    return command.KIND, msgpack.packb(body, use_bin_type=True)


def decode_command(kind: str, body: bytes) -> Command:
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise StoreError(f"command log contains an unknown command kind {kind!r}: it was written by a newer swarmctl; use that version")
    return cls(**msgpack.unpackb(body, raw=False))
