"""The OpenAPI 3.1 description of the coordinator's HTTP API, served at ``GET /openapi.json``.

It is written out here rather than generated, so that it states what the handlers in
``http_api.py`` guarantee: the schema test runs schemathesis against a live node with it.
"""

from __future__ import annotations

from typing import Any

from swarmctl import __version__
from swarmctl.coordinator.strategies import GROUPINGS, STRATEGY_NAMES
from swarmctl.reports.formats import FORMATS, MEDIA_TYPES

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
COUNTS = {"type": "object", "additionalProperties": INTEGER, "description": "results per outcome"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": STRING}),
    "Status": _object(
        {
            "node_id": STRING,
            "state": {"type": "string", "description": "leader, follower, pre-candidate, candidate, or single without peers"},
            "term": INTEGER,
            "leader": STRING,
            "commit_index": INTEGER,
            "applied_index": INTEGER,
            "voters": _array(_object({"address": STRING, "state": STRING}, {"match": INTEGER, "lag": INTEGER})),
        }
    ),
    "Run": _object(
        {"run_id": STRING, "status": STRING, "suite": STRING, "submitted_at": NUMBER, "total": INTEGER, "counts": COUNTS},
        {
            "finished_at": _nullable(NUMBER),
            "exit_code": _nullable(INTEGER),
            "error": STRING,
            "done": INTEGER,
            "priority": INTEGER,
            "start_at": _nullable(NUMBER),
            "eta_s": _nullable(NUMBER),
            "eta_low_s": _nullable(NUMBER),
            "eta_high_s": _nullable(NUMBER),
            "eta_basis": STRING,
            "executors": _array(STRING),
            "failures": _array(_object({"case_id": STRING, "outcome": STRING, "message": STRING, "at": NUMBER})),
        },
    ),
    "RunList": _object({"runs": _array(_ref("Run"))}),
    "Suite": {
        **_object(
            {
                "kind": {"type": "string", "enum": ["pytest", "command"]},
                "bundle": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "sha256 of the uploaded bundle"},
                "name": STRING,
            },
            {"python": STRING, "pytest_args": _array(STRING), "timeout": _nullable({"type": "number", "exclusiveMinimum": 0})},
        ),
        "additionalProperties": False,
    },
    "RunRequest": {
        **_object(
            {"suite": _ref("Suite")},
            {
                "strategy": {"type": "string", "enum": list(STRATEGY_NAMES)},
                "case_ids": _nullable(_array(STRING)),
                "deadline_s": _nullable(NUMBER),
                "priority": INTEGER,
                "retries": {"type": "integer", "minimum": 0, "maximum": 10},
                "start_at": _nullable(NUMBER),
                "durations": _nullable({"type": "object", "additionalProperties": NUMBER}),
                "dependencies": _nullable({"type": "object", "additionalProperties": _array(STRING)}),
                "group": {"type": "string", "enum": list(GROUPINGS)},
                "requirements": _nullable({"type": "object", "additionalProperties": {"type": "object", "additionalProperties": STRING}}),
            },
        ),
        "additionalProperties": False,
    },
    "RunAccepted": _object({"run_id": STRING}),
    "RunCancelled": _object({"run_id": STRING, "cancelled": BOOLEAN}),
    "Bundle": _object({"digest": STRING, "stored": BOOLEAN}),
    "Executor": _object(
        {"id": STRING, "state": STRING, "slots": INTEGER, "busy": INTEGER},
        {
            "labels": {"type": "object", "additionalProperties": STRING},
            "load": NUMBER,
            "resources": {"type": "object"},
            "shards": _array(STRING),
            "last_seen_s": NUMBER,
            "hostname": STRING,
            "pid": INTEGER,
            "address": STRING,
            "software": STRING,
            "reason": STRING,
        },
    ),
    "ExecutorList": _object({"executors": _array(_ref("Executor"))}),
    "ExecutorState": _object({"executor_id": STRING, "state": STRING}),
    "LogLines": _object(
        {
            "run_id": STRING,
            "lines": _array(
                _object({"id": INTEGER, "executor": STRING, "time": NUMBER, "level": STRING, "logger": STRING, "message": STRING})
            ),
        }
    ),
    "History": _object(
        {
            "runs": _array(
                _object(
                    {"run_id": STRING, "status": STRING, "suite": STRING, "submitted_at": NUMBER, "total": INTEGER, "counts": COUNTS},
                    {
                        "finished_at": _nullable(NUMBER),
                        "exit_code": _nullable(INTEGER),
                        "suite_key": STRING,
                        "wall_s": _nullable(NUMBER),
                        "failing": INTEGER,
                        "flaky": INTEGER,
                        "pass_rate": _nullable(NUMBER),
                        "trend": _array(_nullable(NUMBER)),
                        "delta_pp": _nullable(NUMBER),
                    },
                )
            )
        }
    ),
    "Comparison": _object(
        {
            "base": STRING,
            "head": STRING,
            "threshold": NUMBER,
            "new_failures": _array(_object({"id": STRING, "before": STRING, "after": STRING, "message": STRING})),
            "fixed": _array(_object({"id": STRING, "before": STRING, "after": STRING, "message": STRING})),
            "newly_flaky": _array(_object({"id": STRING, "before": STRING, "after": STRING, "message": STRING})),
            "added": _array(_object({"id": STRING, "outcome": STRING})),
            "removed": _array(_object({"id": STRING, "outcome": STRING})),
            "slower": _array(_object({"id": STRING, "before_s": NUMBER, "after_s": NUMBER, "change": _nullable(NUMBER)})),
            "faster": _array(_object({"id": STRING, "before_s": NUMBER, "after_s": NUMBER, "change": _nullable(NUMBER)})),
        },
        {"min_change_s": NUMBER},
    ),
    "TokenRevoked": _object({"token_id": STRING, "closed_connections": INTEGER}),
    "GossipKeyring": _object(
        {"generations": _array(INTEGER), "primary": {"type": "integer", "description": "the generation that seals packets"}}
    ),
}

RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": STRING,
    "description": "a run id, `last` or `last~N`",
}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "invalid request",
        401: "missing, invalid, expired or revoked token",
        403: "the token's role does not allow the call",
        404: "no such run, executor or path",
        409: "the run's bundle was not uploaded",
        413: "request body too large",
        503: "the coordinator did not answer in time or cannot read its database",
    }
    return {str(code): _json("Error", reasons[code]) for code in codes}


def _operation(summary: str, role: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if role is None:
        operation["security"] = []
    else:
        operation["description"] = f"Needs a token with role {role} or higher."
        responses.update(_errors(401, 403))
    return operation


def build_spec() -> dict[str, Any]:
    """Return the OpenAPI document of the HTTP API."""
    digest = {"name": "digest", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
    generation = {"name": "generation", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
    paths = {
        "/openapi.json": {
            "get": _operation(
                "This document", None, {"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}
            )
        },
        "/v1/status": {"get": _operation("This node's view of the cluster: leader, term, commit index, voters", "read", {"200": _json("Status", "status")})},
        "/v1/runs": {
            "get": _operation("Active runs and the runs that finished last", "read", {"200": _json("RunList", "runs"), **_errors(503)}),
            "post": _operation(
                "Submit a run of an uploaded bundle",
                "submit",
                {"202": _json("RunAccepted", "the run is accepted and committed"), **_errors(400, 409, 413, 503)},
                requestBody={"required": True, "content": {"application/json": {"schema": _ref("RunRequest")}}},
            ),
        },
        "/v1/runs/{run_id}": {
            "get": _operation("One run", "read", {"200": _json("Run", "the run"), **_errors(400, 404, 503)}, parameters=[RUN_ID])
        },
        "/v1/runs/{run_id}/cancel": {
            "post": _operation(
                "Cancel an active run (a submit token cancels only its own runs)",
                "submit",
                {"200": _json("RunCancelled", "the run is interrupted"), **_errors(400, 404, 503)},
                parameters=[
                    {"name": "run_id", "in": "path", "required": True, "schema": STRING, "description": "the id of an active run"},
                    {"name": "reason", "in": "query", "required": False, "schema": STRING},
                ],
            )
        },
        "/v1/runs/{run_id}/report": {
            "get": _operation(
                "A run's report as a file",
                "read",
                {
                    "200": {
                        "description": "the report",
                        "headers": {"X-Swarmctl-Run-Id": {"description": "the run's id", "schema": STRING}},
                        "content": {media.split(";")[0]: {"schema": STRING} for media in MEDIA_TYPES.values()},
                    },
                    **_errors(400, 404, 503),
                },
                parameters=[RUN_ID, {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": list(FORMATS), "default": "json"}}],
            )
        },
        "/v1/runs/{run_id}/logs": {
            "get": _operation(
                "The executor log lines of a run, in time order",
                "read",
                {"200": _json("LogLines", "log lines"), **_errors(400, 404, 503)},
                parameters=[
                    RUN_ID,
                    {"name": "executor", "in": "query", "required": False, "schema": _array(STRING), "style": "form", "explode": True},
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                ],
            )
        },
        "/v1/bundles/{digest}": {
            "get": _operation("Whether a bundle is stored", "submit", {"200": _json("Bundle", "bundle"), **_errors(400)}, parameters=[digest]),
            "put": _operation(
                "Upload a bundle archive (the tar.gz that swarmctl run builds); its sha256 must be the digest",
                "submit",
                {"201": _json("Bundle", "stored"), **_errors(400, 413)},
                parameters=[digest],
                requestBody={"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            ),
        },
        "/v1/executors": {"get": _operation("Connected executors and those that left recently", "read", {"200": _json("ExecutorList", "executors"), **_errors(503)})},
        "/v1/executors/{executor_id}/{action}": {
            "post": _operation(
                "Drain, cordon or uncordon an executor",
                "admin",
                {"200": _json("ExecutorState", "the executor's new state"), **_errors(400, 404, 503)},
                parameters=[
                    {"name": "executor_id", "in": "path", "required": True, "schema": STRING},
                    {"name": "action", "in": "path", "required": True, "schema": {"type": "string", "enum": ["drain", "cordon", "uncordon"]}},
                ],
            )
        },
        "/v1/history": {
            "get": _operation(
                "Past runs, newest first, with pass rates and trends",
                "read",
                {"200": _json("History", "runs"), **_errors(400, 503)},
                parameters=[
                    {"name": "suite", "in": "query", "required": False, "schema": STRING},
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                ],
            )
        },
        "/v1/compare": {
            "get": _operation(
                "New failures, fixed, flaky, added, removed, slower and faster tests between two runs",
                "read",
                {"200": _json("Comparison", "the differences"), **_errors(400, 404, 503)},
                parameters=[
                    {"name": "base", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
                    {"name": "head", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
                    {"name": "threshold", "in": "query", "required": False, "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000}},
                ],
            )
        },
        "/v1/tokens/{token_id}": {
            "delete": _operation(
                "Revoke a token and close its connections",
                "admin",
                {"200": _json("TokenRevoked", "revoked"), **_errors(400, 503)},
                parameters=[{"name": "token_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
            )
        },
        "/v1/gossip-keys": {
            "get": _operation("The installed gossip key generations and the one that seals packets", "admin", {"200": _json("GossipKeyring", "keyring"), **_errors(400, 503)}),
            "post": _operation(
                "Install the next gossip key generation on every node; packets stay sealed with the current one",
                "admin",
                {"200": _json("GossipKeyring", "keyring"), **_errors(400, 503)},
            ),
        },
        "/v1/gossip-keys/{generation}/use": {
            "post": _operation(
                "Seal gossip packets with an installed generation, once every executor has applied it",
                "admin",
                {"200": _json("GossipKeyring", "keyring"), **_errors(400, 404, 503)},
                parameters=[generation],
            )
        },
        "/v1/gossip-keys/{generation}": {
            "delete": _operation(
                "Stop accepting packets sealed with a generation, once every executor seals with the current one",
                "admin",
                {"200": _json("GossipKeyring", "keyring"), **_errors(400, 404, 503)},
                parameters=[generation],
            )
        },
        "/v1/leader/transfer": {
            "post": _operation(
                "Hand leadership to another voter (replicated coordinators only); the reply is the leader's status as the handover starts",
                "admin",
                {"200": _json("Status", "status"), **_errors(400, 409, 503)},
                parameters=[{"name": "target", "in": "query", "required": True, "schema": STRING, "description": "the voter to lead next, HOST:PORT"}],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "swarmctl coordinator API",
            "version": __version__,
            "description": (
                "REST calls and the event stream of a swarmctl coordinator, on the port that executors and clients connect to. "
                "Calls need `Authorization: Bearer TOKEN` with a token from `swarmctl token create`, unless the coordinator "
                "runs without a cluster secret. The event stream is a WebSocket at /v1/events (query: run_id, output, logs, "
                "interval_s) that sends one JSON object per event, each with a `kind`; the WebSocket at "
                "/v1/runs/{run_id}/watch sends one run's progress, then its results and its completion. A follower "
                "coordinator redirects calls to the leader with 307."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
