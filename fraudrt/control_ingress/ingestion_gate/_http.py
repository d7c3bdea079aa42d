"""IG's HTTP surface (aiohttp): push, health, lookup, and the OpenAPI document that describes them.

Status codes: 200 with a decision for every well-formed push (bad events are quarantined, not
refused); 400 malformed JSON / wrong body shape / a body nested too deep to split into events /
missing or unusable query; 401 no or wrong key; 405 wrong method (with Allow); 413 body or batch
too large; 429 + Retry-After when too many pushes or bytes are in flight (`_limits.py`); 503 +
Retry-After when Postgres, S3 or Kinesis is down or another request still holds an event (the push
is safe to repeat as it was); 500 only for a bug. Every one of them is listed in the OpenAPI
document, and `tests/integration/test_ig_openapi_fuzz.py` holds IG to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from fraudrt.runtime import classify

from ._admission import REASON_CODES
from ._auth import HEADER, KeyRing
from ._errors import REASON_BY_DEPENDENCY, DependencyDown, InvalidInput, StillInFlight
from ._gate import Gate, Outcome
from ._limits import RETRY_AFTER_SECONDS, InFlightLimits
from ._records import Actor, BatchResponse, ErrorBody, EventResult, SingleResponse

log = logging.getLogger("fraudrt.ingestion_gate")

_ENCODER: Final = msgspec.json.Encoder()
_TOP: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_EVENTS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_ACTOR_KEY: Final = web.RequestKey("actor", Actor)

HealthFn = Callable[[], dict[str, Any]]

# The lookup's query values: ids are at most 256 characters (event ids; receipt and run ids are
# shorter) and Postgres text cannot hold NUL; anything else is a 400, not a statement that fails.
_MAX_QUERY_CHARS: Final = 256
_LOOKUP_PARAMS: Final = ("event_id", "receipt_id", "platform_run_id")


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_ENCODER.encode(obj), status=status, content_type="application/json", headers=headers)


def _error(status: int, code: str, detail: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    return _json(ErrorBody(error=code, detail=detail), status, headers)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def openapi_document(max_batch_events: int, max_body_bytes: int) -> dict[str, Any]:
    """The API as OpenAPI 3.1; `tests/integration/test_ig_http.py` checks it against the routes."""
    key: list[dict[str, list[str]]] = [{"ApiKey": []}]
    err = {"$ref": "#/components/schemas/Error"}

    def resp(desc: str, schema: Any = None, headers: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"description": desc}
        if schema is not None:
            out["content"] = {"application/json": {"schema": schema}}
        if headers:
            out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        return out

    common = {"401": resp("missing or wrong X-IG-Api-Key", err),
              "405": resp("method not allowed (the Allow header lists the allowed ones)", err),
              "503": resp("a dependency is down or the event is still in flight; retry as is", err, True)}
    reasons = [*REASON_CODES, "DUPLICATE"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "fraudrt Ingestion Gate", "version": "1"},
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": HEADER}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
                # Admission rules, not request validation: an event that breaks them is answered 200
                # with a QUARANTINE decision and its reason, so the request schema cannot require them.
                "Envelope": {"description": "the canonical event envelope, closed: event_id (1..256 chars, no "
                             "U+0000), event_type, ts_utc and manifest_fingerprint required; the pins its class "
                             "needs; payload per the schema policy; at most 1 MiB as a Kinesis record. Anything "
                             "else (any JSON value) is quarantined with a reason code."},
                "EbRef": {"type": "object", "required": ["topic", "partition", "offset", "offset_kind"],
                          "properties": {"topic": {"type": "string"}, "partition": {"type": "integer"},
                                         "offset": {"type": "string"},
                                         "offset_kind": {"const": "kinesis_sequence"},
                                         "published_at_utc": {"type": "string"}}},
                "Decision": {"enum": ["ADMIT", "DUPLICATE", "QUARANTINE"]},
                "EventResult": {"type": "object",
                                "required": ["index", "decision", "receipt_id", "receipt_ref"],
                                "properties": {"index": {"type": "integer"},
                                               "decision": {"$ref": "#/components/schemas/Decision"},
                                               "receipt_id": {"type": "string"},
                                               "receipt_ref": {"type": "string"},
                                               "event_id": {"type": "string"},
                                               "reason_codes": {
                                                   "type": "array", "items": {"enum": reasons},
                                                   "description": "why a QUARANTINE (or DUPLICATE): "
                                                   "EVENT_TOO_LARGE = the Kinesis record (compact envelope + "
                                                   "partition key) would exceed 1 MiB; NESTING_TOO_DEEP = "
                                                   "nested deeper than the decoder follows; ENVELOPE_INVALID "
                                                   "includes an event_id holding U+0000"},
                                               "eb_ref": {"$ref": "#/components/schemas/EbRef"}}},
            },
        },
        "paths": {
            "/v1/ingest/push": {"post": {
                "summary": "Admit one envelope, or a batch {\"events\": [...]}",
                "security": key,
                # What IG accepts, not what it admits: an object with an "events" key is a batch and
                # holds nothing else; any other object is one envelope, and an envelope that breaks
                # the envelope or policy rules is answered 200 with a QUARANTINE decision.
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"type": "object", "not": {"required": ["events"]}},
                    {"type": "object", "required": ["events"], "additionalProperties": False,
                     "properties": {"events": {"type": "array", "maxItems": max_batch_events,
                                               "items": {"$ref": "#/components/schemas/Envelope"}}}},
                ]}}},
                    "description": f"one envelope, or a batch {{\"events\": [...]}}; at most {max_body_bytes} "
                                   "bytes"},
                "responses": {
                    "200": resp("a decision per event (single: decision, receipt, receipt_ref; batch: results)",
                                {"oneOf": [
                                    {"type": "object", "required": ["decision", "receipt", "receipt_ref"]},
                                    {"type": "object", "required": ["results", "admit", "duplicate", "quarantine"],
                                     "properties": {"results": {"type": "array", "items": {
                                         "$ref": "#/components/schemas/EventResult"}}}}]}),
                    "400": resp("MALFORMED_JSON, BODY_NOT_OBJECT, EVENTS_NOT_A_LIST, BATCH_INVALID (an \"events\" "
                                "key beside others), or NESTING_TOO_DEEP (a body nested too deep to split into "
                                "events)", err),
                    "413": resp("body larger than max_body_bytes, or more events than max_batch_events", err),
                    "429": resp("too many pushes or request bytes in flight (TOO_MANY_PUSHES); retry after "
                                "Retry-After", err, True),
                    **common,
                }}},
            "/v1/ops/health": {"get": {
                "summary": "IG health (GREEN/AMBER/RED with reasons)", "security": key,
                "responses": {"200": resp("health", {"type": "object", "required": ["state", "reasons"]}),
                              "401": common["401"], "405": common["405"]}}},
            "/v1/ops/lookup": {"get": {
                "summary": "Receipts by event_id or receipt_id (optionally within platform_run_id)",
                "security": key,
                # One exploded object: how OpenAPI says "event_id or receipt_id" (plain query
                # parameters cannot), each value 1..256 characters without U+0000.
                "parameters": [{"name": "query", "in": "query", "required": True, "style": "form", "explode": True,
                                "schema": {"type": "object",
                                           "properties": {n: {"type": "string", "minLength": 1,
                                                              "maxLength": _MAX_QUERY_CHARS,
                                                              "pattern": "^[^\u0000]*$"}
                                                          for n in _LOOKUP_PARAMS},
                                           "anyOf": [{"required": ["event_id"]}, {"required": ["receipt_id"]}]}}],
                "responses": {"200": resp("matches", {"type": "object", "required": ["matches"]}),
                              "400": resp("MISSING_QUERY (neither event_id nor receipt_id) or INVALID_QUERY (an "
                                          f"empty value, one over {_MAX_QUERY_CHARS} characters, or one holding "
                                          "U+0000)", err),
                              **common}}},
            "/v1/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": resp("OpenAPI 3.1 document", {"type": "object"}), "405": common["405"]}}},
        },
    }


def _result(o: Outcome) -> EventResult:
    return EventResult(index=o.index, decision=o.decision, receipt_id=o.receipt.receipt_id, receipt_ref=o.receipt_ref,
                       event_id=o.event_id, reason_codes=list(o.reason_codes), eb_ref=o.eb_ref)


class IgHttp:
    """Builds the aiohttp application around a `Gate`."""

    def __init__(self, gate: Gate, keys: KeyRing, health: HealthFn, *, max_body_bytes: int,
                 max_batch_events: int, on_dependency_down: Callable[[DependencyDown], None],
                 max_pushes_in_flight: int = 6, max_bytes_in_flight: int = 32 * 1024 * 1024) -> None:
        self.gate = gate
        self.keys = keys
        self.health = health
        self.max_body_bytes = max_body_bytes
        self.max_batch_events = max_batch_events
        self.on_dependency_down = on_dependency_down
        self.limits = InFlightLimits(max_pushes_in_flight, max_bytes_in_flight)
        self._openapi = _ENCODER.encode(openapi_document(max_batch_events, max_body_bytes))

    def app(self) -> web.Application:
        # client_max_size is a backstop; `push` checks the size itself to answer with a JSON body.
        app = web.Application(client_max_size=self.max_body_bytes + 1, middlewares=[self._errors, self._auth])
        app.router.add_post("/v1/ingest/push", self.push)
        app.router.add_get("/v1/ops/health", self.health_view)
        app.router.add_get("/v1/ops/lookup", self.lookup)
        app.router.add_get("/v1/openapi.json", self.openapi)
        return app

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except DependencyDown as exc:
            self.on_dependency_down(exc)
            log.warning("IG 503 %s %s: %s", request.method, request.path, exc)
            return _error(503, REASON_BY_DEPENDENCY[exc.dependency], exc.detail, _retry_after(exc.retry_after))
        except StillInFlight as exc:
            return _error(503, "PUBLISH_IN_FLIGHT_RETRY", str(exc), _retry_after(exc.retry_after))
        except InvalidInput as exc:
            return _error(400, "INVALID_INPUT", exc.detail)
        except web.HTTPException as exc:
            if exc.status == 413:
                return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
            if exc.status == 404:
                return _error(404, "NOT_FOUND")
            if exc.status == 405:
                allow = exc.headers.get("Allow")
                return _error(405, "METHOD_NOT_ALLOWED", headers={"Allow": allow} if allow else None)
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure.transient:  # a dependency failing where no store or client caught it
                log.warning("IG 503 %s %s: %s", request.method, request.path, failure.code)
                return _error(503, "DEPENDENCY_UNAVAILABLE", failure.code, _retry_after(max(1.0, failure.backoff)))
            log.exception("IG 500 on %s %s", request.method, request.path)
            return _error(500, "INTERNAL_ERROR")

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        # Auth before the body is read (the reference parsed JSON before checking the key).
        if request.path == "/v1/openapi.json":
            return await handler(request)
        actor = self.keys.authenticate(request.headers.get(HEADER))
        if actor is None:
            return _error(401, "UNAUTHORIZED")
        request[_ACTOR_KEY] = actor
        return await handler(request)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def health_view(self, request: web.Request) -> web.Response:
        return _json(self.health())

    async def lookup(self, request: web.Request) -> web.Response:
        values = {n: request.query.get(n) for n in _LOOKUP_PARAMS}
        for name, value in values.items():
            if value is not None and not (0 < len(value) <= _MAX_QUERY_CHARS and "\x00" not in value):
                return _error(400, "INVALID_QUERY",
                              f"{name} must be 1..{_MAX_QUERY_CHARS} characters, without U+0000")
        if values["event_id"] is None and values["receipt_id"] is None:
            return _error(400, "MISSING_QUERY", "give event_id or receipt_id")
        matches = await self.gate.store.lookup(event_id=values["event_id"], receipt_id=values["receipt_id"],
                                               platform_run_id=values["platform_run_id"])
        return _json({"matches": matches})

    async def push(self, request: web.Request) -> web.Response:
        size = request.content_length
        if size is not None and size > self.max_body_bytes:
            return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
        reserved = self.max_body_bytes if size is None else size  # a chunked body may grow to the limit
        refused = self.limits.try_enter(reserved)
        if refused is not None:
            return _error(429, "TOO_MANY_PUSHES", refused, _retry_after(RETRY_AFTER_SECONDS))
        try:
            return await self._push(request)
        finally:
            self.limits.leave(reserved)

    async def _push(self, request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > self.max_body_bytes:
            return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
        try:
            top = _TOP.decode(body)
        except msgspec.ValidationError:
            return _error(400, "BODY_NOT_OBJECT", "the body must be an envelope object or {\"events\": [...]}")
        except msgspec.DecodeError as exc:
            return _error(400, "MALFORMED_JSON", str(exc))
        except RecursionError:
            # Splitting a body into events follows its nesting too; one this deep cannot be split.
            return _error(400, "NESTING_TOO_DEEP", "the body is nested deeper than the decoder follows")
        actor = request[_ACTOR_KEY]
        if "events" in top and len(top) > 1:
            return _error(400, "BATCH_INVALID", "a batch is {\"events\": [...]} and nothing else")
        if "events" not in top:
            outcomes = await self.gate.admit([body], actor)
            o = outcomes[0]
            return _json(SingleResponse(decision=o.decision, receipt=o.receipt, receipt_ref=o.receipt_ref))
        try:
            events = _EVENTS.decode(top["events"])
        except msgspec.ValidationError:
            return _error(400, "EVENTS_NOT_A_LIST", "\"events\" must be a JSON array of envelopes")
        except RecursionError:
            return _error(400, "NESTING_TOO_DEEP", "the body is nested deeper than the decoder follows")
        if len(events) > self.max_batch_events:
            return _error(413, "BATCH_TOO_LARGE", f"{len(events)} events; at most {self.max_batch_events} per push")
        outcomes = await self.gate.admit([bytes(e) for e in events], actor) if events else []
        counts = {"ADMIT": 0, "DUPLICATE": 0, "QUARANTINE": 0}
        for o in outcomes:
            counts[o.decision] += 1
        return _json(BatchResponse(results=[_result(o) for o in outcomes], admit=counts["ADMIT"],
                                   duplicate=counts["DUPLICATE"], quarantine=counts["QUARANTINE"]))
