"""IG's HTTP surface (aiohttp): push, health, lookup, and the OpenAPI document that describes them.

Status codes: 200 with a decision for every well-formed push (bad events are quarantined, not
refused); 400 malformed JSON / wrong body shape / missing query; 401 no or wrong key; 413 body or
batch too large; 503 + Retry-After when Postgres, S3 or Kinesis is down or another request still
holds an event (the push is safe to repeat as it was); 500 only for a bug.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from ._auth import HEADER, KeyRing
from ._errors import REASON_BY_DEPENDENCY, DependencyDown, StillInFlight
from ._gate import Gate, Outcome
from ._records import Actor, BatchResponse, ErrorBody, EventResult, SingleResponse

log = logging.getLogger("fraudrt.ingestion_gate")

_ENCODER: Final = msgspec.json.Encoder()
_TOP: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_EVENTS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_ACTOR_KEY: Final = web.RequestKey("actor", Actor)

HealthFn = Callable[[], dict[str, Any]]


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
              "503": resp("a dependency is down or the event is still in flight; retry as is", err, True)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "fraudrt Ingestion Gate", "version": "1"},
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": HEADER}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
                "Envelope": {"type": "object", "description": "the canonical event envelope (closed)",
                             "required": ["event_id", "event_type", "ts_utc", "manifest_fingerprint"]},
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
                                               "reason_codes": {"type": "array", "items": {"type": "string"}},
                                               "eb_ref": {"$ref": "#/components/schemas/EbRef"}}},
            },
        },
        "paths": {
            "/v1/ingest/push": {"post": {
                "summary": "Admit one envelope, or a batch {\"events\": [...]}",
                "security": key,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {"type": "object", "required": ["events"], "additionalProperties": False,
                     "properties": {"events": {"type": "array", "maxItems": max_batch_events,
                                               "items": {"$ref": "#/components/schemas/Envelope"}}}},
                ]}}}, "description": f"at most {max_body_bytes} bytes"},
                "responses": {
                    "200": resp("a decision per event (single: decision, receipt, receipt_ref; batch: results)",
                                {"oneOf": [
                                    {"type": "object", "required": ["decision", "receipt", "receipt_ref"]},
                                    {"type": "object", "required": ["results", "admit", "duplicate", "quarantine"],
                                     "properties": {"results": {"type": "array", "items": {
                                         "$ref": "#/components/schemas/EventResult"}}}}]}),
                    "400": resp("malformed JSON or a body that is neither an envelope nor a batch", err),
                    "413": resp("body larger than max_body_bytes, or more events than max_batch_events", err),
                    **common,
                }}},
            "/v1/ops/health": {"get": {
                "summary": "IG health (GREEN/AMBER/RED with reasons)", "security": key,
                "responses": {"200": resp("health", {"type": "object", "required": ["state", "reasons"]}),
                              "401": common["401"]}}},
            "/v1/ops/lookup": {"get": {
                "summary": "Receipts by event_id or receipt_id (optionally within platform_run_id)",
                "security": key,
                "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                               for n in ("event_id", "receipt_id", "platform_run_id")],
                "responses": {"200": resp("matches", {"type": "object", "required": ["matches"]}),
                              "400": resp("neither event_id nor receipt_id given", err), **common}}},
            "/v1/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": resp("OpenAPI 3.1 document", {"type": "object"})}}},
        },
    }


def _result(o: Outcome) -> EventResult:
    return EventResult(index=o.index, decision=o.decision, receipt_id=o.receipt.receipt_id, receipt_ref=o.receipt_ref,
                       event_id=o.event_id, reason_codes=list(o.reason_codes), eb_ref=o.eb_ref)


class IgHttp:
    """Builds the aiohttp application around a `Gate`."""

    def __init__(self, gate: Gate, keys: KeyRing, health: HealthFn, *, max_body_bytes: int,
                 max_batch_events: int, on_dependency_down: Callable[[DependencyDown], None]) -> None:
        self.gate = gate
        self.keys = keys
        self.health = health
        self.max_body_bytes = max_body_bytes
        self.max_batch_events = max_batch_events
        self.on_dependency_down = on_dependency_down
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
        except web.HTTPException as exc:
            if exc.status == 413:
                return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
            if exc.status in (404, 405):
                return _error(exc.status, "NOT_FOUND" if exc.status == 404 else "METHOD_NOT_ALLOWED")
            raise
        except Exception:
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
        q = request.query
        event_id, receipt_id = q.get("event_id") or None, q.get("receipt_id") or None
        if event_id is None and receipt_id is None:
            return _error(400, "MISSING_QUERY", "give event_id or receipt_id")
        matches = await self.gate.store.lookup(event_id=event_id, receipt_id=receipt_id,
                                               platform_run_id=q.get("platform_run_id") or None)
        return _json({"matches": matches})

    async def push(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
        body = await request.read()
        if len(body) > self.max_body_bytes:
            return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
        try:
            top = _TOP.decode(body)
        except msgspec.ValidationError:
            return _error(400, "BODY_NOT_OBJECT", "the body must be an envelope object or {\"events\": [...]}")
        except msgspec.DecodeError as exc:
            return _error(400, "MALFORMED_JSON", str(exc))
        actor = request[_ACTOR_KEY]
        if set(top) != {"events"}:
            outcomes = await self.gate.admit([body], actor)
            o = outcomes[0]
            return _json(SingleResponse(decision=o.decision, receipt=o.receipt, receipt_ref=o.receipt_ref))
        try:
            events = _EVENTS.decode(top["events"])
        except msgspec.ValidationError:
            return _error(400, "EVENTS_NOT_A_LIST", "\"events\" must be a JSON array of envelopes")
        if len(events) > self.max_batch_events:
            return _error(413, "BATCH_TOO_LARGE", f"{len(events)} events; at most {self.max_batch_events} per push")
        outcomes = await self.gate.admit([bytes(e) for e in events], actor) if events else []
        counts = {"ADMIT": 0, "DUPLICATE": 0, "QUARANTINE": 0}
        for o in outcomes:
            counts[o.decision] += 1
        return _json(BatchResponse(results=[_result(o) for o in outcomes], admit=counts["ADMIT"],
                                   duplicate=counts["DUPLICATE"], quarantine=counts["QUARANTINE"]))
