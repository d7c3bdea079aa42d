"""Case Management (`case_mgmt`): one case per subject, an append-only timeline, the investigator API.

Consumes `case_trigger` events of `fp.bus.case.v1`; workflow OPEN -> IN_REVIEW -> RESOLVED with
assignment, notes and labels; labels leave for the Label Store through the outbox.
"""

from ._actor import CRASH_AFTER_CASES_ENV, KEYS_ENV, CaseMgmt, api_keys_path, case_api_key, read_api_file
from ._api import CaseApi
from ._openapi import HEADER_NAME, openapi_document
from ._store import CRASH_AFTER_LABEL_COMMIT_ENV, CaseError, Filters

__all__ = [
    "CRASH_AFTER_CASES_ENV",
    "CRASH_AFTER_LABEL_COMMIT_ENV",
    "HEADER_NAME",
    "KEYS_ENV",
    "CaseApi",
    "CaseError",
    "CaseMgmt",
    "Filters",
    "api_keys_path",
    "case_api_key",
    "openapi_document",
    "read_api_file",
]
