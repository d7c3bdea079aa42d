"""Ingestion Gate (IG): the authenticated HTTP boundary that admits envelopes onto the bus.

Validate (closed envelope, class pins, schema policy) -> dedupe per platform run -> commit the
admission in Postgres -> PutRecords -> receipt with the real eb_ref. Policies: `config/ig/*.yaml`.
"""

from ._admission import REASON_CODES, Admissible, Rejected, evaluate, quarantine_ids
from ._auth import HEADER as API_KEY_HEADER
from ._auth import ApiKeyError, KeyRing, api_keys_path, ig_api_key, key_fingerprint, load_api_keys, load_keys
from ._errors import DependencyDown, StillInFlight
from ._evidence import ObjectWriter, batch_key, quarantine_key, receipt_key
from ._gate import CRASH_HOOK_ENV, Gate, GateConfig, GateCounters, Outcome
from ._http import IgHttp, openapi_document
from ._policy import Policy, PolicyError, TypeRule, load_policy
from ._publish import Publisher, PublishItem
from ._records import (
    BatchResponse,
    EbRef,
    ErrorBody,
    EventResult,
    QuarantineRecord,
    Receipt,
    ReceiptBatch,
    SingleResponse,
)
from ._service import IngestionGate
from ._store import AdmissionStore

__all__ = [
    "API_KEY_HEADER",
    "CRASH_HOOK_ENV",
    "REASON_CODES",
    "Admissible",
    "AdmissionStore",
    "ApiKeyError",
    "BatchResponse",
    "DependencyDown",
    "EbRef",
    "ErrorBody",
    "EventResult",
    "Gate",
    "GateConfig",
    "GateCounters",
    "IgHttp",
    "IngestionGate",
    "KeyRing",
    "ObjectWriter",
    "Outcome",
    "Policy",
    "PolicyError",
    "PublishItem",
    "Publisher",
    "QuarantineRecord",
    "Receipt",
    "ReceiptBatch",
    "Rejected",
    "SingleResponse",
    "StillInFlight",
    "TypeRule",
    "api_keys_path",
    "batch_key",
    "evaluate",
    "ig_api_key",
    "key_fingerprint",
    "load_api_keys",
    "load_keys",
    "load_policy",
    "openapi_document",
    "quarantine_ids",
    "quarantine_key",
    "receipt_key",
]
