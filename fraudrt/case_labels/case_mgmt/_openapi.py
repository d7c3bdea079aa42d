"""The investigator API's OpenAPI 3.1 document (`GET /v1/openapi.json`).

Body and answer schemas are generated from the structs the server decodes and encodes with
(`_views.py`, the Label Store reader's `LabelAsOf`), so the document says exactly what is enforced;
paths, parameters and statuses are written here, one entry per status the server can answer.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from fraudrt.contracts import CASE_STATES, LABEL_VALUES, TRIGGER_TYPES

from ..label_store.reader import LabelAsOf
from ._views import (
    CALENDAR_TS_PATTERN,
    ActionResult,
    AssignBody,
    CaseDetail,
    CaseList,
    ErrorBody,
    LabelBody,
    NoteBody,
    ResolveBody,
)

HEADER_NAME: Final = "X-Case-Api-Key"
_REF: Final = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _resp(desc: str, schema: Any = None, retry_after: bool = False, allow: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": desc}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    headers = {}
    if retry_after:
        headers["Retry-After"] = {"schema": {"type": "integer"}, "description": "seconds"}
    if allow:
        headers["Allow"] = {"schema": {"type": "string"}, "description": "the allowed methods"}
    if headers:
        out["headers"] = headers
    return out


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(
        [NoteBody, AssignBody, LabelBody, ResolveBody, CaseList, CaseDetail, ActionResult, ErrorBody, LabelAsOf],
        ref_template=_REF)
    # A label's value must be one of its type's values: said in the schema, so that a value of
    # another type is invalid input to the document as it is to the server.
    schemas["LabelBody"]["allOf"] = [{"oneOf": [
        {"properties": {"label_type": {"const": t}, "label_value": {"enum": list(values)}}}
        for t, values in LABEL_VALUES.items()]}]
    err = _ref("ErrorBody")
    key: list[dict[str, list[str]]] = [{"ApiKey": []}]
    common = {
        "401": _resp("no or wrong X-Case-Api-Key (UNAUTHORIZED)", err),
        "405": _resp("method not allowed (METHOD_NOT_ALLOWED; the Allow header lists the allowed ones)", err,
                     allow=True),
        "503": _resp("Postgres is down (DEPENDENCY_UNAVAILABLE); retry after Retry-After", err, retry_after=True),
    }
    case_id = {"name": "case_id", "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 256},
               "description": "32 lowercase hex characters; anything else is a 404 CASE_NOT_FOUND"}

    def query(name: str, schema: dict[str, Any], desc: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}

    actions = {
        "notes": ("NoteBody", "Add a note (any state; the case does not move)"),
        "assign": ("AssignBody", "Assign the case (OPEN or IN_REVIEW -> IN_REVIEW)"),
        "labels": ("LabelBody", "Assert a label on the case's events (HUMAN; to the Label Store through the "
                                "outbox, durable before this answers)"),
        "resolve": ("ResolveBody", "Resolve the case (IN_REVIEW -> RESOLVED)"),
    }
    paths: dict[str, Any] = {
        "/v1/cases": {"get": {
            "summary": "The case queue, newest first, filtered", "security": key,
            "parameters": [
                query("state", {"type": "string", "pattern": f"^({'|'.join(CASE_STATES)})(,({'|'.join(CASE_STATES)}))*"
                                r"\Z"}, "one state or several, comma separated"),
                query("assignee", {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z"},
                      "cases assigned to this name"),
                query("trigger_type", {"enum": list(TRIGGER_TYPES)}, "cases with a trigger of this type"),
                query("action", {"enum": ["APPROVE", "STEP_UP", "REVIEW", "DECLINE"]},
                      "cases with a decision of this action"),
                query("min_score", {"type": "number", "minimum": -1e9, "maximum": 1e9}, "highest score at least"),
                query("max_score", {"type": "number", "minimum": -1e9, "maximum": 1e9}, "highest score at most"),
                query("min_age_seconds", {"type": "number", "minimum": 0, "maximum": 10 * 365 * 86400},
                      "opened at least this long ago"),
                query("max_age_seconds", {"type": "number", "minimum": 0, "maximum": 10 * 365 * 86400},
                      "opened at most this long ago"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (default 50)"),
                query("cursor", {"type": "string", "pattern": r"^[0-9]{1,16}\.[0-9a-f]{32}\Z"},
                      "next_cursor of the previous page"),
            ],
            "responses": {"200": _resp("a page of cases", _ref("CaseList")),
                          "400": _resp("INVALID_QUERY: a filter out of range or of the wrong form", err), **common}}},
        "/v1/cases/{case_id}": {"get": {
            "summary": "One case: its timeline, the decision's evidence and features, its labels", "security": key,
            "parameters": [case_id],
            "responses": {"200": _resp("the case", _ref("CaseDetail")),
                          "404": _resp("CASE_NOT_FOUND", err), **common}}},
        "/v1/labels": {"get": {
            "summary": "What the Label Store knew of one event's label at a time (RESOLVED, CONFLICT, NOT_FOUND)",
            "security": key,
            "parameters": [
                {"name": "event_id", "in": "query", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": r"^[^\x00]*\Z"},
                 "description": "the labelled event (a traffic AUTH_REQUEST's event id)"},
                query("label_type", {"enum": list(LABEL_VALUES)}, "default fraud_disposition"),
                query("as_of", {"type": "string", "pattern": CALENDAR_TS_PATTERN},
                      "default now; YYYY-MM-DDTHH:MM:SS.ffffffZ"),
                query("include_auto", {"enum": ["true", "false"]},
                      "count the platform's AUTO labels (never training truth); default false"),
            ],
            "responses": {"200": _resp("the as-of answer", _ref("LabelAsOf")),
                          "400": _resp("INVALID_QUERY", err), **common}}},
        "/v1/ops/health": {"get": {
            "summary": "case_mgmt health (GREEN/AMBER/RED with reasons) and counters", "security": key,
            "responses": {"200": _resp("health", {"type": "object", "required": ["state", "reasons"]}),
                          "401": common["401"], "405": common["405"]}}},
        "/v1/openapi.json": {"get": {
            "summary": "This document", "security": [],
            "responses": {"200": _resp("OpenAPI 3.1 document", {"type": "object"}), "405": common["405"]}}},
        "/console": {"get": {
            "summary": "The investigator console (HTML; it holds no data: it asks for the key and calls this API)",
            "security": [],
            "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                          "405": common["405"]}}},
    }
    for name, (schema, summary) in actions.items():
        paths[f"/v1/cases/{{case_id}}/{name}"] = {"post": {
            "summary": summary, "security": key, "parameters": [case_id],
            "requestBody": {"required": True, "description": f"at most {max_body_bytes} bytes",
                            "content": {"application/json": {"schema": _ref(schema)}}},
            "responses": {
                "200": _resp("applied (or, for a repeated request_id with the same content, as applied before: "
                             "duplicate true)", _ref("ActionResult")),
                "400": _resp("MALFORMED_JSON, INVALID_BODY (msgspec's reason), LABEL_VALUE_INVALID", err),
                "404": _resp("CASE_NOT_FOUND", err),
                "409": _resp("VERSION_CONFLICT (expected_version is not the case's; current_version says which "
                             "is), INVALID_TRANSITION (the workflow does not allow it now), IDEMPOTENCY_MISMATCH "
                             "(request_id used for other content), EVENT_NOT_IN_CASE (event_ids names an event the "
                             "case does not hold), TOO_MANY_EVENTS (over 100 events: name them in event_ids)", err),
                "413": _resp("BODY_TOO_LARGE", err),
                **common}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "fraudrt investigator API (case management)", "version": "1",
                 "description": "Cases are opened by CaseTrigger from escalated decisions, failed actions and "
                                "unresolved audit chains; investigators assign, annotate, label and resolve them. "
                                "Workflow: OPEN -> IN_REVIEW (assign) -> RESOLVED (resolve)."},
        "components": {"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": HEADER_NAME}},
                       "schemas": schemas},
        "paths": paths,
    }
