"""What a caller asks the generator for, and what it gets back."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

Mode = Literal["baseline", "fraud"]
CAMPAIGN_TYPES = ("card_testing", "account_takeover", "mule_ring")


class CampaignMix(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Relative share of fraud flows per campaign type (normalised; zero switches a type off)."""

    card_testing: float = 0.4
    account_takeover: float = 0.3
    mule_ring: float = 0.3

    def shares(self) -> dict[str, float]:
        raw = {t: float(getattr(self, t)) for t in CAMPAIGN_TYPES}
        total = sum(raw.values())
        return {t: (v / total if total > 0 else 0.0) for t, v in raw.items()}


class WorldParameters(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shape of the population and of the campaigns. Defaults give a believable card-payments world."""

    flows_per_merchant: float = 400.0  # sizes the merchant population from the legitimate flow count
    flows_per_party: float = 20.0  # sizes the customer population
    min_merchants: int = 20
    min_parties: int = 200
    local_party_share: float = 0.92  # a card-present sale is made by a party of the merchant's region
    shared_ip_share: float = 0.03  # legitimate use of public / carrier-NAT IPs shared by many parties
    session_gap_s: float = 1800.0
    latency_median_ms: float = 180.0
    latency_sigma: float = 0.5
    card_testing_attempts: float = 30.0  # mean attempts per card-testing campaign
    card_testing_gap_s: float = 12.0  # mean gap between attempts (a bot)
    card_testing_max_minor: int = 299  # attempts are at most 2.99
    ato_flows: float = 6.0
    ato_gap_s: float = 1200.0
    ato_amount_median: float = 450.0
    mule_ring_flows: float = 40.0
    mule_ring_min_size: int = 5
    mule_ring_max_size: int = 12
    mule_amount_median: float = 180.0


def _default_start() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A world to generate. Give ``n_flows``, ``duration_s`` or both; the missing one follows ``mean_eps``."""

    out_dir: str  # the engine run root is written at ``<out_dir>/<run_id>``
    seed: int = 42
    n_flows: int | None = None
    duration_s: float | None = None
    start_utc: datetime = msgspec.field(default_factory=_default_start)
    mean_eps: float = 60.0  # natural arrival rate of the reference world (~60.9/s)
    fraud_rate: float = 0.02  # share of all flows that belong to a campaign
    campaign_mix: CampaignMix = msgspec.field(default_factory=CampaignMix)
    n_parts: int = 4
    scenario_id: str = "baseline_v1"
    modes: tuple[Mode, ...] = ("baseline", "fraud")
    parameters: WorldParameters = msgspec.field(default_factory=WorldParameters)
    overwrite: bool = False


class ResolvedSize(msgspec.Struct, frozen=True, kw_only=True):
    n_flows: int
    n_fraud: int
    start_us: int
    duration_us: int


def resolve_size(req: GenerateRequest) -> ResolvedSize:
    """Validate the request and settle flow count and window (raises ValueError with the reason)."""
    if req.n_flows is None and req.duration_s is None:
        raise ValueError("give n_flows, duration_s or both")
    if req.mean_eps <= 0:
        raise ValueError("mean_eps must be > 0")
    if req.start_utc.tzinfo is None:
        raise ValueError("start_utc must be timezone-aware")
    if not 0.0 <= req.fraud_rate < 1.0:
        raise ValueError("fraud_rate must be in [0, 1)")
    if req.n_parts < 1:
        raise ValueError("n_parts must be >= 1")
    if not req.modes or any(m not in ("baseline", "fraud") for m in req.modes):
        raise ValueError("modes must be a non-empty subset of (baseline, fraud)")
    if not req.scenario_id or "/" in req.scenario_id or "=" in req.scenario_id:
        raise ValueError("scenario_id must be a non-empty path-safe token")
    if req.seed < 0 or req.seed >= 2**63:
        raise ValueError("seed must be in [0, 2**63)")
    if any(getattr(req.campaign_mix, t) < 0 for t in CAMPAIGN_TYPES):
        raise ValueError("campaign_mix shares must be >= 0")
    if req.n_flows is not None and req.n_flows < 1:
        raise ValueError("n_flows must be >= 1")
    if req.duration_s is not None and req.duration_s <= 0:
        raise ValueError("duration_s must be > 0")
    n_flows = req.n_flows if req.n_flows is not None else max(1, round(req.duration_s * req.mean_eps))  # type: ignore[operator]
    duration_s = req.duration_s if req.duration_s is not None else n_flows / req.mean_eps
    duration_us = max(1_000_000, round(duration_s * 1_000_000))
    n_fraud = round(n_flows * req.fraud_rate)
    if req.fraud_rate > 0 and sum(req.campaign_mix.shares().values()) == 0:
        raise ValueError("fraud_rate > 0 needs at least one campaign type with a share > 0")
    start = req.start_utc.astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start_us = (start - epoch) // timedelta(microseconds=1)
    if not math.isfinite(duration_s):
        raise ValueError("duration must be finite")
    return ResolvedSize(n_flows=n_flows, n_fraud=n_fraud, start_us=start_us, duration_us=duration_us)


class WorldSummary(msgspec.Struct, frozen=True, kw_only=True):
    engine_run_root: str
    run_id: str
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    scenario_id: str
    n_flows: int
    n_fraud_flows: int
    campaigns: dict[str, int]  # campaign type -> number of campaigns
    row_counts: dict[str, int]  # output_id -> rows
    part_counts: dict[str, int]  # output_id -> part files
    min_ts_utc: str
    max_ts_utc: str
    bytes_written: int
    elapsed_s: float  # wall time of this call (not part of the world)
