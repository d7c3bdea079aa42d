"""The investigator API (aiohttp), served by the case_mgmt component of the case_labels pack.

`GET /v1/cases` (the queue, filtered: state, assignee, trigger type, action, score, age; keyset
pages), `GET /v1/cases/{case_id}` (the case, its timeline, the decision's evidence and features,
its labels), `POST /v1/cases/{case_id}/{notes|assign|labels|resolve}`, `GET /v1/labels` (the Label
Store's as-of answer for one event), `GET /v1/ops/health`, `GET /v1/openapi.json`, and the
console page at `/console`.

Auth is IG's: an API key in a header (`X-Case-Api-Key`), compared in constant time against every
configured key (`KeyRing`), never logged; 401 `{"error": "UNAUTHORIZED"}` without one. The OpenAPI
document and the console's page (which holds no data; everything it shows comes through the API
with the key the person types) are the only things served without a key.

Statuses: 200; 400 bad body or query (with msgspec's or our reason); 401; 404 no such case (a
malformed case id included); 405 with Allow; 409 a version conflict, a workflow step not allowed,
a request id re-used for other content; 413 body over `api_max_body_bytes`; 503 with Retry-After
when Postgres is down. A 500 is a bug, counted in health. Every status is in the document, and a
bounded schemathesis run holds the server to it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from fraudrt.contracts import LABEL_VALUES, TRIGGER_TYPES, parse_ts_utc
from fraudrt.control_ingress.ingestion_gate import KeyRing
from fraudrt.runtime import classify

from ..label_store import reader as labels
from ._console import CONSOLE_HTML
from ._features import flow_features
from ._openapi import HEADER_NAME as HEADER
from ._openapi import openapi_document
from ._store import MAX_PAGE, CaseError, Filters, Outbox, act, decode_cursor, list_cases, load_case
from ._views import CALENDAR_TS_PATTERN, AssignBody, CaseDetail, CaseList, ErrorBody, LabelBody, NoteBody, ResolveBody

log = logging.getLogger("fraudrt.case_mgmt")

_CASE_ID: Final = re.compile(r"^[0-9a-f]{32}\Z")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
_CALENDAR_TS: Final = re.compile(CALENDAR_TS_PATTERN)
_STATES: Final = frozenset({"OPEN", "IN_REVIEW", "RESOLVED"})
_ACTIONS: Final = frozenset({"APPROVE", "STEP_UP", "REVIEW", "DECLINE"})
_MAX_AGE: Final = 10 * 365 * 86400.0
_encode: Final = msgspec.json.Encoder()
_BODIES: Final[dict[str, type[Any]]] = {"notes": NoteBody, "assign": AssignBody, "labels": LabelBody,
                                        "resolve": ResolveBody}
_PRINCIPAL: Final = web.RequestKey("principal", str)
_OPEN_PATHS: Final = frozenset({"/v1/openapi.json", "/console"})


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encode.encode(obj), status=status, content_type="application/json", headers=headers)


def _error(status: int, code: str, detail: str | None = None, headers: dict[str, str] | None = None,
           current_version: int | None = None) -> web.Response:
    return _json(ErrorBody(error=code, detail=detail, current_version=current_version), status, headers)


class _BadQuery(Exception):
    pass


def _number(query: Any, name: str, lo: float, hi: float) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _BadQuery(f"{name} must be a number") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise _BadQuery(f"{name} must be between {lo:g} and {hi:g}")
    return value


def _filters(query: Any) -> Filters:
    states = tuple(s for raw in query.getall("state", []) for s in raw.split(","))
    if any(s not in _STATES for s in states):
        raise _BadQuery(f"state must be one of {', '.join(sorted(_STATES))}")
    assignee, trigger_type, action = query.get("assignee"), query.get("trigger_type"), query.get("action")
    if assignee is not None and not _NAME.match(assignee):
        raise _BadQuery("assignee must be a name token (letters, digits, . _ @ -; at most 64)")
    if trigger_type is not None and trigger_type not in TRIGGER_TYPES:
        raise _BadQuery(f"trigger_type must be one of {', '.join(TRIGGER_TYPES)}")
    if action is not None and action not in _ACTIONS:
        raise _BadQuery(f"action must be one of {', '.join(sorted(_ACTIONS))}")
    limit = _number(query, "limit", 1, MAX_PAGE)
    if limit is not None and limit != int(limit):
        raise _BadQuery("limit must be an integer")
    cursor = query.get("cursor")
    try:
        decoded = decode_cursor(cursor) if cursor is not None else None
    except ValueError as exc:
        raise _BadQuery(f"cursor: {exc}") from None
    return Filters(states=states, assignee=assignee, trigger_type=trigger_type, action=action,
                   min_score=_number(query, "min_score", -1e9, 1e9), max_score=_number(query, "max_score", -1e9, 1e9),
                   min_age_seconds=_number(query, "min_age_seconds", 0, _MAX_AGE),
                   max_age_seconds=_number(query, "max_age_seconds", 0, _MAX_AGE),
                   limit=int(limit) if limit is not None else 50, cursor=decoded)


def _decode_body(raw: bytes, kind: type[Any]) -> Any:
    """The request body as `kind`. JSON has one number type: `3.0` is the integer 3 to JSON Schema
    (and to the OpenAPI document), so an integral float version is taken as the int it is."""
    doc = msgspec.json.decode(raw)
    if isinstance(doc, dict):
        version = doc.get("expected_version")
        if isinstance(version, float) and version.is_integer() and abs(version) <= 2**53:
            doc["expected_version"] = int(version)
    return msgspec.convert(doc, kind, strict=True)


class CaseApi:
    """The aiohttp application around the case store of one run."""

    def __init__(self, pool: Any, keys: KeyRing, *, platform_run_id: str, outbox: Outbox, case_stream: str,
                 max_body_bytes: int, health: Callable[[], dict[str, Any]]) -> None:
        self.pool = pool
        self.keys = keys
        self.run = platform_run_id
        self.outbox = outbox
        self.case_stream = case_stream
        self.max_body_bytes = max_body_bytes
        self.health = health
        self.errors_5xx = 0
        self.requests = 0
        self._openapi = _encode.encode(openapi_document(max_body_bytes))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes + 1, middlewares=[self._errors, self._auth])
        r = app.router
        r.add_get("/v1/openapi.json", self.openapi)
        r.add_get("/console", self.console)
        r.add_get("/v1/ops/health", self.health_view)
        r.add_get("/v1/cases", self.queue)
        r.add_get("/v1/cases/{case_id}", self.case)
        r.add_get("/v1/labels", self.label)
        for action in _BODIES:
            r.add_post(f"/v1/cases/{{case_id}}/{action}", self.action)
        return app

    # ------------------------------------------------------------------ middlewares

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        self.requests += 1
        try:
            return await handler(request)
        except CaseError as exc:
            return _error(exc.status, exc.code, exc.detail, current_version=exc.current_version)
        except _BadQuery as exc:
            return _error(400, "INVALID_QUERY", str(exc))
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(404, "NOT_FOUND")
            if exc.status == 405:
                allow = exc.headers.get("Allow")
                return _error(405, "METHOD_NOT_ALLOWED", headers={"Allow": allow} if allow else None)
            if exc.status == 413:
                return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
            raise
        except Exception as exc:
            self.errors_5xx += 1
            failure = classify(exc)
            if failure.transient:
                log.warning("case API 503 %s %s: %s", request.method, request.path, failure.code)
                return _error(503, "DEPENDENCY_UNAVAILABLE", failure.code,
                              {"Retry-After": str(max(1, math.ceil(failure.backoff)))})
            log.exception("case API 500 on %s %s", request.method, request.path)
            return _error(500, "INTERNAL_ERROR")

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path in _OPEN_PATHS:
            return await handler(request)
        actor = self.keys.authenticate(request.headers.get(HEADER))
        if actor is None:
            return _error(401, "UNAUTHORIZED")
        request[_PRINCIPAL] = actor.principal
        return await handler(request)

    # ------------------------------------------------------------------ handlers

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def console(self, request: web.Request) -> web.Response:
        return web.Response(text=CONSOLE_HTML, content_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                     "script-src 'unsafe-inline'; img-src data:", "X-Frame-Options": "DENY"})

    async def health_view(self, request: web.Request) -> web.Response:
        return _json(self.health())

    async def queue(self, request: web.Request) -> web.Response:
        cases, cursor = await list_cases(self.pool, self.run, _filters(request.query))
        return _json(CaseList(cases=cases, next_cursor=cursor))

    def _case_id(self, request: web.Request) -> str:
        case_id = request.match_info["case_id"]
        if not _CASE_ID.match(case_id):
            raise CaseError(404, "CASE_NOT_FOUND", "a case id is 32 lowercase hex characters")
        return case_id

    async def case(self, request: web.Request) -> web.Response:
        summary, timeline, triggers = await load_case(self.pool, self.run, self._case_id(request))
        details = [t.get("trigger_payload", {}) for t in triggers]
        flow_ids = sorted({d["flow_id"] for d in details if isinstance(d.get("flow_id"), int)})
        event_ids = sorted({d["source_event_id"] for d in details if d.get("source_event_id")})
        assertions = await labels.assertions_for(self.pool, self.run, event_ids)
        now = await labels.labels_as_of(self.pool, self.run, event_ids, "fraud_disposition", datetime.now(UTC))
        return _json(CaseDetail(case=summary, timeline=timeline, evidence=triggers,
                                features=await flow_features(self.pool, self.run, flow_ids),
                                labels=msgspec.to_builtins(assertions),
                                labels_now=msgspec.to_builtins(list(now.values()))))

    async def label(self, request: web.Request) -> web.Response:
        q = request.query
        event_id, label_type = q.get("event_id"), q.get("label_type", "fraud_disposition")
        if not event_id or len(event_id) > 256 or "\x00" in event_id:
            raise _BadQuery("event_id is required: 1..256 characters, without U+0000")
        if label_type not in LABEL_VALUES:
            raise _BadQuery(f"label_type must be one of {', '.join(LABEL_VALUES)}")
        if "as_of" in q and not _CALENDAR_TS.match(q["as_of"]):
            raise _BadQuery("as_of must be YYYY-MM-DDTHH:MM:SS.ffffffZ, a real UTC time of 1900-2099")
        as_of = parse_ts_utc(q["as_of"]) if "as_of" in q else datetime.now(UTC)
        include_auto = q.get("include_auto", "false")
        if include_auto not in ("true", "false"):
            raise _BadQuery("include_auto must be true or false")
        answer = await labels.labels_as_of(self.pool, self.run, [event_id], label_type, as_of,
                                           include_auto=include_auto == "true")
        return _json(answer[event_id])

    async def action(self, request: web.Request) -> web.Response:
        case_id = self._case_id(request)
        kind = request.path.rsplit("/", 1)[1]
        size = request.content_length
        if size is not None and size > self.max_body_bytes:
            return _error(413, "BODY_TOO_LARGE", f"request body exceeds {self.max_body_bytes} bytes")
        raw = await request.read()
        try:
            body = _decode_body(raw, _BODIES[kind])
        except msgspec.ValidationError as exc:
            return _error(400, "INVALID_BODY", str(exc))
        except msgspec.DecodeError as exc:
            return _error(400, "MALFORMED_JSON", str(exc))
        except RecursionError:
            return _error(400, "MALFORMED_JSON", "the body is nested deeper than the decoder follows")
        result = await act(self.pool, platform_run_id=self.run, outbox=self.outbox, case_stream=self.case_stream,
                           case_id=case_id, body=body, principal=request[_PRINCIPAL])
        return _json(result)

