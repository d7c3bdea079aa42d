"""Wire formats shared by the envelope, the pins and the reports.

Patterns end in ``\\Z``, not ``$``: msgspec matches with Python's ``re.search``, where ``$`` also
matches before a trailing newline, so ``"<hex>\\n"`` would pass a ``$``-anchored pattern. Digit
classes are ``[0-9]``, not ``\\d``, which in Python also matches non-ASCII digits; the reference's
JSON-Schema regexes are ASCII-only.
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import Meta

HEX64_PATTERN: Final = r"^[0-9a-f]{64}\Z"
HEX32_PATTERN: Final = r"^[0-9a-f]{32}\Z"
PLATFORM_RUN_ID_PATTERN: Final = r"^platform_[0-9]{8}T[0-9]{6}Z\Z"
# Same shape as the reference's `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`, but with field
# ranges, so a month 13 or hour 24 is refused by the decoder itself at no extra cost.
TS_UTC_PATTERN: Final = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z\Z"
)

UINT64_MAX: Final = 2**64 - 1

Hex64 = Annotated[str, Meta(pattern=HEX64_PATTERN, description="sha256, 64 lowercase hex")]
Hex32 = Annotated[str, Meta(pattern=HEX32_PATTERN, description="truncated sha256, 32 lowercase hex")]
PlatformRunId = Annotated[str, Meta(pattern=PLATFORM_RUN_ID_PATTERN, description="platform_YYYYMMDDTHHMMSSZ")]
TsUtc = Annotated[str, Meta(pattern=TS_UTC_PATTERN, description="RFC 3339 UTC, 6 fractional digits, Z")]
# msgspec cannot express an upper bound beyond int64 in Meta; callers check UINT64_MAX themselves.
Seed = Annotated[int, Meta(ge=0, description="uint64")]
ScenarioId = Annotated[str, Meta(min_length=1, max_length=256)]
EventId = Annotated[str, Meta(min_length=1, max_length=256)]
EventType = Annotated[str, Meta(min_length=1, max_length=256)]
SchemaVersion = Annotated[str, Meta(min_length=1, max_length=64)]
Short128 = Annotated[str, Meta(min_length=1, max_length=128)]
