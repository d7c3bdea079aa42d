"""The simulation: a population, its legitimate arrivals, and the fraud campaigns on top.

Everything is drawn in whole arrays with numpy (no per-row Python); loops run only over small sets
(categories, time zones, campaign types). The RNG is PCG64 seeded from the world identity, and each
stage gets its own spawned stream so the stages do not shift each other's draws.

World model:
- merchants: a category (sets the amount distribution, the local hour-of-day profile and the weekend
  lift), a home time zone, physical (sites) or virtual (edges, card-not-present), a popularity weight.
- parties with 1-3 accounts, 1-2 instruments per account, 1-4 devices and 1-4 IPs; a home time zone;
  an activity weight. A small pool of public IPs is shared by many parties (legitimate sharing).
- legitimate arrivals: merchant by popularity, hour by the merchant's local profile over the window,
  party mostly from the merchant's region (virtual merchants: anyone), the party's own account,
  instrument, (mostly primary) device and IP; amount log-normal per merchant.
- campaigns add arrivals that leave the signatures fraud teams look for:
  card testing - one stolen instrument, a fresh device and rotating IPs, dozens of sub-3.00 attempts
  seconds apart at one to three card-not-present merchants;
  account takeover - an established party's account and instrument used from a new device and IP,
  a handful of large purchases at high-value merchants;
  mule ring - new parties, each with its own account and card, sharing one to three devices and IPs,
  medium-large purchases spread over the window.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from . import _ids
from ._request import CAMPAIGN_TYPES, GenerateRequest, ResolvedSize

H_US = 3_600_000_000
DAY_US = 24 * H_US

TIMEZONES: tuple[str, ...] = (
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Singapore",
)
_TZ_WEIGHTS = np.array([0.25, 0.20, 0.22, 0.10, 0.13, 0.10])

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
B8 = npt.NDArray[np.bool_]


def _profile(base: float, peaks: list[tuple[float, float, float]]) -> F64:
    """Relative arrival rate per local hour: a floor plus Gaussian bumps (hour, width, height)."""
    hours = np.arange(24, dtype=np.float64) + 0.5
    out = np.full(24, base)
    for centre, width, height in peaks:
        d = np.minimum(np.abs(hours - centre), 24 - np.abs(hours - centre))  # circular distance
        out += height * np.exp(-0.5 * (d / width) ** 2)
    return out


@dataclass(frozen=True)
class Category:
    name: str
    share: float
    amount_median: float
    amount_sigma: float
    virtual_prob: float
    profile: F64
    weekend_lift: float
    denominations: tuple[int, ...] = ()  # gift cards: fixed face values (minor units)


CATEGORIES: tuple[Category, ...] = (
    Category("grocery", 0.20, 38.0, 0.65, 0.08, _profile(0.05, [(11.0, 1.5, 0.7), (17.5, 1.8, 1.0)]), 1.15),
    Category("restaurant", 0.15, 28.0, 0.60, 0.15, _profile(0.03, [(12.5, 1.0, 0.9), (19.5, 1.5, 1.0)]), 1.25),
    Category("fuel", 0.08, 55.0, 0.35, 0.0, _profile(0.08, [(8.0, 1.2, 0.9), (17.0, 1.5, 0.8)]), 0.90),
    Category("retail", 0.17, 60.0, 0.80, 0.45, _profile(0.04, [(15.0, 3.5, 1.0)]), 1.30),
    Category("pharmacy", 0.06, 22.0, 0.55, 0.10, _profile(0.04, [(11.0, 2.5, 0.8), (17.0, 2.0, 0.7)]), 0.80),
    Category("electronics", 0.07, 220.0, 0.90, 0.60, _profile(0.06, [(16.0, 3.5, 1.0), (21.0, 1.5, 0.5)]), 1.20),
    Category("travel", 0.05, 380.0, 0.80, 0.80, _profile(0.15, [(13.0, 4.5, 1.0)]), 1.00),
    Category("digital_goods", 0.18, 12.0, 0.90, 1.00, _profile(0.20, [(21.0, 2.5, 1.0), (13.0, 2.0, 0.4)]), 1.10),
    Category(
        "gift_cards",
        0.04,
        50.0,
        0.60,
        0.70,
        _profile(0.10, [(14.0, 3.0, 1.0)]),
        1.10,
        denominations=(1_000, 2_500, 5_000, 10_000, 20_000),
    ),
)
_CAT_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}
_CARD_TESTING_CATEGORIES = ("digital_goods", "gift_cards", "retail")
_ATO_CATEGORIES = ("electronics", "travel", "gift_cards", "retail")
_MULE_CATEGORIES = ("gift_cards", "digital_goods", "electronics")


@dataclass
class World:
    """All arrivals of the world, sorted by (merchant_id, arrival_seq): the engines' file order."""

    merchant_id: U64
    arrival_seq: I64
    ts_us: I64
    response_us: I64
    flow_id: I64
    party_id: I64
    account_id: I64
    instrument_id: I64
    device_id: I64
    ip_id: I64
    session_id: I64
    amount_minor: I64
    fraud: B8
    campaign_code: npt.NDArray[np.int32]  # index into campaign_ids, -1 for legitimate flows
    campaign_ids: list[str]
    is_virtual: B8
    tz_primary: npt.NDArray[np.int8]
    tz_operational: npt.NDArray[np.int8]  # -1: none (physical merchants)
    site_id: U64  # 0: null
    edge_id: U64  # 0: null
    bucket_index: I64
    lambda_realised: F64
    local_primary_us: I64
    local_operational_us: I64
    part_bounds: list[tuple[int, int]]  # [start, end) row ranges, cut on merchant boundaries
    campaigns: dict[str, int] = field(default_factory=dict)
    n_merchants: int = 0
    n_parties: int = 0

    def rows(self, lo: int, hi: int) -> World:
        """Rows [lo, hi) as views (no copy): one engine batch."""
        cut = {
            name: getattr(self, name)[lo:hi]
            for name, f in self.__dataclass_fields__.items()
            if isinstance(getattr(self, name), np.ndarray)
        }
        return dataclasses.replace(self, **cut, part_bounds=[(0, hi - lo)])


@dataclass(frozen=True)
class WorldKey:
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    scenario_id: str

    def key(self, recipe: str) -> int:
        return _ids.recipe_key(recipe, self.manifest_fingerprint, self.parameter_hash, self.seed, self.scenario_id)


def _tz_offsets(h0: int, n_hours: int) -> I64:
    """UTC offset (µs) per time zone and absolute UTC hour: offsets[tz, hour - h0].

    Every zone used changes offset only on whole UTC hours, so one value per hour is exact.
    """
    hours_us = (np.arange(h0, h0 + n_hours, dtype=np.int64)) * H_US
    utc = pl.Series("h", hours_us).cast(pl.Datetime("us", "UTC"))
    out = np.empty((len(TIMEZONES), n_hours), dtype=np.int64)
    for i, tz in enumerate(TIMEZONES):
        local = utc.dt.convert_time_zone(tz).dt.replace_time_zone(None).cast(pl.Int64).to_numpy()
        out[i] = local - hours_us
    return out


def _pick(rng: np.random.Generator, start: I64, count: I64, skew: float = 1.0) -> I64:
    """Per row, an index in [start, start + count); skew > 1 favours the first (primary) one."""
    u = rng.random(len(start))
    if skew != 1.0:
        u = u**skew
    return start + np.minimum((u * count).astype(np.int64), count - 1)


def _lognormal_minor(rng: np.random.Generator, median: F64 | float, sigma: F64 | float, n: int) -> I64:
    values = np.exp(np.log(median) + sigma * rng.standard_normal(n)) * 100.0
    return np.clip(np.rint(values), 100, 5_000_000).astype(np.int64)


def _split_rows(rng: np.random.Generator, rows: int, mean_size: float) -> I64:
    """Sizes of campaigns that together hold exactly `rows` flows, each >= 1, about `mean_size` each."""
    if rows <= 0:
        return np.zeros(0, dtype=np.int64)
    n = int(min(rows, max(1, round(rows / max(mean_size, 1.0)))))
    sizes = np.ones(n, dtype=np.int64)
    if rows > n:
        sizes += rng.multinomial(rows - n, np.full(n, 1.0 / n)).astype(np.int64)
    return sizes


def _burst_times(rng: np.random.Generator, sizes: I64, gap_s: float, lo_us: int, hi_us: int) -> tuple[I64, I64]:
    """Campaign-local timestamps: a start per campaign, then exponential gaps (a burst)."""
    n_c = len(sizes)
    total = int(sizes.sum())
    span = hi_us - lo_us
    # A world shorter than the burst compresses the gaps, so a burst still fits in the window.
    gap_us = np.minimum(gap_s * 1e6, span / (4.0 * np.maximum(sizes, 1)))
    owner = np.repeat(np.arange(n_c), sizes)
    gaps = rng.exponential(1.0, total) * gap_us[owner]
    cs = np.cumsum(gaps)
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    before = np.where(first > 0, cs[first - 1], 0.0)
    within = cs - before[owner]
    latest_start = np.maximum(0.0, span - 2.0 * sizes * gap_us)
    starts = lo_us + rng.random(n_c) * latest_start
    ts = (starts[owner] + within).astype(np.int64)
    return np.clip(ts, lo_us, hi_us - 1), owner


@dataclass
class _Rows:
    """Arrivals before ordering: population indices, not ids yet."""

    merchant: I64
    ts_us: I64
    party: I64
    account: I64
    instrument: I64
    device: I64
    ip: I64
    amount_minor: I64
    campaign: npt.NDArray[np.int32]


def simulate(req: GenerateRequest, size: ResolvedSize, wk: WorldKey) -> World:
    p = req.parameters
    root = np.random.SeedSequence(_ids.rng_entropy(wk.parameter_hash, wk.seed, wk.scenario_id))
    r_pop, r_time, r_attach, r_amount, r_fraud, r_latency, r_route = (
        np.random.Generator(np.random.PCG64(s)) for s in root.spawn(7)
    )

    n_legit = size.n_flows - size.n_fraud
    start_us, end_us = size.start_us, size.start_us + size.duration_us
    n_tz, n_cat = len(TIMEZONES), len(CATEGORIES)

    # --- merchants -----------------------------------------------------------------------------
    n_merch = int(max(p.min_merchants, round(max(n_legit, 1) / p.flows_per_merchant)))
    cat_share = np.array([c.share for c in CATEGORIES])
    m_cat = r_pop.choice(n_cat, size=n_merch, p=cat_share / cat_share.sum())
    m_tz = r_pop.choice(n_tz, size=n_merch, p=_TZ_WEIGHTS)
    m_virtual = r_pop.random(n_merch) < np.array([c.virtual_prob for c in CATEGORIES])[m_cat]
    m_weight = r_pop.lognormal(0.0, 1.1, n_merch)
    m_share = m_weight / m_weight.sum()
    m_mu = np.log(np.array([c.amount_median for c in CATEGORIES]))[m_cat] + r_pop.normal(0.0, 0.25, n_merch)
    m_sigma = np.array([c.amount_sigma for c in CATEGORIES])[m_cat] * r_pop.uniform(0.85, 1.15, n_merch)
    m_n_sites = np.where(m_virtual, 0, r_pop.integers(1, 4, n_merch))
    m_n_edges = np.where(m_virtual, r_pop.integers(2, 5, n_merch), 0)
    m_site_start = np.cumsum(m_n_sites) - m_n_sites
    m_edge_start = np.cumsum(m_n_edges) - m_n_edges
    edge_tz = r_pop.choice(n_tz, size=int(m_n_edges.sum()), p=_TZ_WEIGHTS).astype(np.int8)
    merchant_ids = _ids.entity_id_array(wk.key("fraudrt.engine.merchant_id.v1"), np.arange(n_merch)).astype(np.uint64)

    # --- parties and what they hold --------------------------------------------------------------
    n_party = int(max(p.min_parties, round(max(n_legit, 1) / p.flows_per_party)))
    tz_counts = r_pop.multinomial(n_party, _TZ_WEIGHTS)
    party_tz_start = np.cumsum(tz_counts) - tz_counts  # parties are laid out by home zone
    activity = r_pop.gamma(0.9, 1.0, n_party)
    cum_activity = np.cumsum(activity)
    n_acc = 1 + r_pop.binomial(2, 0.25, n_party)
    acc_start = np.cumsum(n_acc) - n_acc
    n_accounts = int(n_acc.sum())
    n_inst = 1 + r_pop.binomial(1, 0.4, n_accounts)
    inst_start = np.cumsum(n_inst) - n_inst
    inst_account = np.repeat(np.arange(n_accounts), n_inst)
    account_party = np.repeat(np.arange(n_party), n_acc)
    n_instruments = int(n_inst.sum())
    n_dev = 1 + r_pop.binomial(3, 0.3, n_party)
    dev_start = np.cumsum(n_dev) - n_dev
    n_devices = int(n_dev.sum())
    n_ipp = 1 + r_pop.binomial(3, 0.4, n_party)
    ip_start = np.cumsum(n_ipp) - n_ipp
    n_public_ip = max(5, n_party // 300)
    public_ip_start = int(n_ipp.sum())
    n_ips = public_ip_start + n_public_ip

    # --- the time grid: absolute UTC hours covering the window -------------------------------------
    h0 = start_us // H_US
    h1 = -(-end_us // H_US)
    n_b = int(h1 - h0)
    offsets = _tz_offsets(int(h0), n_b)
    b_lo = np.maximum(start_us, (h0 + np.arange(n_b)) * H_US)
    b_hi = np.minimum(end_us, (h0 + np.arange(n_b) + 1) * H_US)
    b_len = (b_hi - b_lo).astype(np.float64)
    local_hour_start = (h0 + np.arange(n_b))[None, :] * H_US + offsets  # [tz, b]
    local_hour = (local_hour_start // H_US) % 24
    weekend = ((local_hour_start // DAY_US) + 3) % 7 >= 5  # 1970-01-01 was a Thursday (Mon = 0)
    profiles = np.stack([c.profile for c in CATEGORIES])  # [cat, 24]
    lifts = np.array([c.weekend_lift for c in CATEGORIES])
    # density[cat, tz, b]: share of a merchant's arrivals falling in bucket b
    dens = profiles[:, local_hour] * np.where(weekend[None, :, :], lifts[:, None, None], 1.0) * (b_len / H_US)
    dens = dens.reshape(n_cat * n_tz, n_b)
    dens = dens / dens.sum(axis=1, keepdims=True)
    cdf = np.cumsum(dens, axis=1)
    cdf[:, -1] = 1.0
    m_class = m_cat * n_tz + m_tz

    # --- legitimate arrivals ----------------------------------------------------------------------
    merch = r_time.choice(n_merch, size=n_legit, p=m_share).astype(np.int64)
    cls = m_class[merch]
    # One searchsorted over all classes: class c's CDF is shifted into [c, c + 1].
    flat = (np.arange(n_cat * n_tz)[:, None] + cdf).ravel()
    pos = np.searchsorted(flat, cls + r_time.random(n_legit), side="right")
    bucket = np.clip(pos - cls * n_b, 0, n_b - 1)
    ts = b_lo[bucket] + (r_time.random(n_legit) * b_len[bucket]).astype(np.int64)

    local = (~m_virtual[merch]) & (r_attach.random(n_legit) < p.local_party_share)
    tz_of_row = m_tz[merch]
    has_local = tz_counts[tz_of_row] > 0
    local &= has_local
    lo_idx = party_tz_start[tz_of_row]
    hi_idx = lo_idx + tz_counts[tz_of_row]
    lo = np.where(local, np.where(lo_idx > 0, cum_activity[np.maximum(lo_idx - 1, 0)], 0.0), 0.0)
    hi = np.where(local, cum_activity[np.maximum(hi_idx - 1, 0)], cum_activity[-1])
    party = np.searchsorted(cum_activity, lo + r_attach.random(n_legit) * (hi - lo), side="right")
    party = np.minimum(party, n_party - 1).astype(np.int64)
    account = _pick(r_attach, acc_start[party], n_acc[party])
    instrument = _pick(r_attach, inst_start[account], n_inst[account])
    device = _pick(r_attach, dev_start[party], n_dev[party], skew=2.0)
    ip = _pick(r_attach, ip_start[party], n_ipp[party], skew=1.5)
    shared = r_attach.random(n_legit) < p.shared_ip_share
    ip = np.where(shared, _pick(r_attach, np.full(n_legit, public_ip_start), np.full(n_legit, n_public_ip), 2.0), ip)

    amount = _lognormal_minor(r_amount, np.exp(m_mu[merch]), m_sigma[merch], n_legit)
    for ci, cat in enumerate(CATEGORIES):
        if cat.denominations:
            sel = np.flatnonzero(m_cat[merch] == ci)
            amount[sel] = r_amount.choice(np.array(cat.denominations, dtype=np.int64), size=len(sel))

    parts: list[_Rows] = [
        _Rows(merch, ts, party, account, instrument, device, ip, amount, np.full(n_legit, -1, dtype=np.int32))
    ]

    # --- campaigns -----------------------------------------------------------------------------
    shares = req.campaign_mix.shares()
    rows_per_type = dict.fromkeys(CAMPAIGN_TYPES, 0)
    if size.n_fraud:
        alloc = r_fraud.multinomial(size.n_fraud, [shares[t] for t in CAMPAIGN_TYPES])
        rows_per_type = {t: int(n) for t, n in zip(CAMPAIGN_TYPES, alloc, strict=True)}
    campaign_ids: list[str] = []
    campaigns: dict[str, int] = {}
    next_party, next_account, next_instrument = n_party, n_accounts, n_instruments
    next_device, next_ip = n_devices, n_ips

    def pool(categories: tuple[str, ...], virtual_only: bool) -> I64:
        want = np.isin(m_cat, [_CAT_INDEX[c] for c in categories])
        for mask in ((want & m_virtual) if virtual_only else want, want, m_virtual, np.ones(n_merch, bool)):
            idx = np.flatnonzero(mask)
            if len(idx):
                return idx.astype(np.int64)
        raise AssertionError("no merchants")

    def merchants_for(owner: I64, n_c: int, pool_idx: I64, max_k: int) -> I64:
        table = r_fraud.choice(pool_idx, size=(n_c, max_k))
        k = r_fraud.integers(1, max_k + 1, n_c)
        j = np.minimum((r_fraud.random(len(owner)) * k[owner]).astype(np.int64), k[owner] - 1)
        out: I64 = table[owner, j]
        return out

    def codes(kind: str, n_c: int, owner: I64) -> npt.NDArray[np.int32]:
        base = len(campaign_ids)
        campaign_ids.extend(f"{kind}_{i + 1:05d}" for i in range(n_c))
        campaigns[kind] = n_c
        return (base + owner).astype(np.int32)

    # card testing
    sizes = _split_rows(r_fraud, rows_per_type["card_testing"], p.card_testing_attempts)
    if len(sizes):
        n_c = len(sizes)
        ts_c, owner = _burst_times(r_fraud, sizes, p.card_testing_gap_s, start_us, end_us)
        victim_inst = r_fraud.integers(0, n_instruments, n_c)
        inst_c = victim_inst[owner]
        acc_c = inst_account[inst_c]
        party_c = account_party[acc_c]
        dev_c = next_device + owner  # one fresh device (the bot) per campaign
        n_ip_c = r_fraud.integers(1, 4, n_c)  # rotating proxies
        ip_c = next_ip + 3 * owner + np.minimum((r_fraud.random(len(owner)) * n_ip_c[owner]).astype(np.int64), 2)
        next_device += n_c
        next_ip += 3 * n_c
        merch_c = merchants_for(owner, n_c, pool(_CARD_TESTING_CATEGORIES, True), 3)
        amt = r_fraud.integers(50, p.card_testing_max_minor + 1, len(owner))
        amt = np.where(r_fraud.random(len(owner)) < 0.25, 100, amt)  # the classic 1.00 probe
        parts.append(_Rows(merch_c, ts_c, party_c, acc_c, inst_c, dev_c, ip_c, amt, codes("card_testing", n_c, owner)))

    # account takeover
    sizes = _split_rows(r_fraud, rows_per_type["account_takeover"], p.ato_flows)
    if len(sizes):
        n_c = len(sizes)
        # Established victims: the more active half of the population, weighted by activity, and the
        # takeover starts after the first quarter of the window so the victim has history.
        established = np.flatnonzero(activity >= np.median(activity))
        w = activity[established] / activity[established].sum()
        victims = r_fraud.choice(established, size=n_c, p=w)
        ts_c, owner = _burst_times(r_fraud, sizes, p.ato_gap_s, start_us + size.duration_us // 4, end_us)
        party_c = victims[owner]
        acc_c = _pick(r_fraud, acc_start[party_c], n_acc[party_c])
        inst_c = _pick(r_fraud, inst_start[acc_c], n_inst[acc_c])
        dev_c = next_device + owner
        ip_c = next_ip + owner
        next_device += n_c
        next_ip += n_c
        merch_c = merchants_for(owner, n_c, pool(_ATO_CATEGORIES, True), 4)
        amt = _lognormal_minor(r_fraud, p.ato_amount_median, 0.5, len(owner))
        parts.append(
            _Rows(merch_c, ts_c, party_c, acc_c, inst_c, dev_c, ip_c, amt, codes("account_takeover", n_c, owner))
        )

    # mule rings
    sizes = _split_rows(r_fraud, rows_per_type["mule_ring"], p.mule_ring_flows)
    if len(sizes):
        n_c = len(sizes)
        owner = np.repeat(np.arange(n_c), sizes)
        ts_c = start_us + (r_fraud.random(len(owner)) * size.duration_us).astype(np.int64)
        ring = r_fraud.integers(p.mule_ring_min_size, p.mule_ring_max_size + 1, n_c)
        stride = p.mule_ring_max_size
        mule = np.minimum((r_fraud.random(len(owner)) * ring[owner]).astype(np.int64), ring[owner] - 1)
        slot = stride * owner + mule  # each mule: a fresh party with one account and one card
        party_c = next_party + slot
        acc_c = next_account + slot
        inst_c = next_instrument + slot
        next_party += stride * n_c
        next_account += stride * n_c
        next_instrument += stride * n_c
        n_dev_ring = r_fraud.integers(1, 4, n_c)
        n_ip_ring = r_fraud.integers(1, 4, n_c)
        dev_c = (
            next_device + 3 * owner + np.minimum((r_fraud.random(len(owner)) * n_dev_ring[owner]).astype(np.int64), 2)
        )
        ip_c = next_ip + 3 * owner + np.minimum((r_fraud.random(len(owner)) * n_ip_ring[owner]).astype(np.int64), 2)
        next_device += 3 * n_c
        next_ip += 3 * n_c
        merch_c = merchants_for(owner, n_c, pool(_MULE_CATEGORIES, False), 5)
        amt = _lognormal_minor(r_fraud, p.mule_amount_median, 0.6, len(owner))
        parts.append(_Rows(merch_c, ts_c, party_c, acc_c, inst_c, dev_c, ip_c, amt, codes("mule_ring", n_c, owner)))

    rows = _Rows(*(np.concatenate([getattr(r, f) for r in parts]) for f in _Rows.__dataclass_fields__))
    n = len(rows.ts_us)

    # --- engine order: by merchant_id, then time; arrival_seq is 1-based per merchant ------------------
    row_mid = merchant_ids[rows.merchant]
    order = np.lexsort((np.arange(n), rows.ts_us, row_mid))
    rows = _Rows(*(getattr(rows, f)[order] for f in _Rows.__dataclass_fields__))
    mid = merchant_ids[rows.merchant]
    new_merchant = np.empty(n, dtype=bool)
    new_merchant[0] = True
    new_merchant[1:] = mid[1:] != mid[:-1]
    group_start = np.flatnonzero(new_merchant)
    group_of = np.cumsum(new_merchant) - 1
    arrival_seq = (np.arange(n) - group_start[group_of] + 1).astype(np.int64)

    flow_ids = _ids.flow_id_array(wk.key("fraudrt.engine.flow_id.v1"), mid, arrival_seq)
    party_id = _ids.entity_id_array(wk.key("fraudrt.engine.party_id.v1"), rows.party)
    account_id = _ids.entity_id_array(wk.key("fraudrt.engine.account_id.v1"), rows.account)
    instrument_id = _ids.entity_id_array(wk.key("fraudrt.engine.instrument_id.v1"), rows.instrument)
    device_id = _ids.entity_id_array(wk.key("fraudrt.engine.device_id.v1"), rows.device)
    ip_id = _ids.entity_id_array(wk.key("fraudrt.engine.ip_id.v1"), rows.ip)

    # --- sessions: same party on the same device, split by a quiet gap ------------------------------
    pair = rows.party * np.int64(next_device + 1) + rows.device
    s_order = np.lexsort((rows.ts_us, pair))
    s_pair, s_ts = pair[s_order], rows.ts_us[s_order]
    new_session = np.empty(n, dtype=bool)
    new_session[0] = True
    new_session[1:] = (s_pair[1:] != s_pair[:-1]) | ((s_ts[1:] - s_ts[:-1]) > p.session_gap_s * 1e6)
    s_start = s_ts[np.flatnonzero(new_session)][np.cumsum(new_session) - 1]
    session_sorted = _ids.session_id_array(
        wk.key("fraudrt.engine.session_id.v1"), party_id[s_order], device_id[s_order], s_start
    )
    session_id = np.empty(n, dtype=np.int64)
    session_id[s_order] = session_sorted

    # --- routing (5B): site or edge, local clocks, realised intensity --------------------------------
    m = rows.merchant
    virtual = m_virtual[m]
    site_idx = _pick(r_route, m_site_start[m], np.maximum(m_n_sites[m], 1))
    edge_idx = _pick(r_route, m_edge_start[m], np.maximum(m_n_edges[m], 1))
    site_id = np.where(
        virtual, 0, _ids.entity_id_array(wk.key("fraudrt.engine.site_id.v1"), site_idx).astype(np.uint64)
    ).astype(np.uint64)
    edge_id = np.where(
        virtual, _ids.entity_id_array(wk.key("fraudrt.engine.edge_id.v1"), edge_idx).astype(np.uint64), 0
    ).astype(np.uint64)
    tz_primary = m_tz[m].astype(np.int8)
    tz_oper = np.where(virtual, edge_tz[np.minimum(edge_idx, max(len(edge_tz) - 1, 0))] if len(edge_tz) else -1, -1)
    tz_oper = tz_oper.astype(np.int8)
    bucket_index = (rows.ts_us // H_US - h0).astype(np.int64)
    local_primary = rows.ts_us + offsets[tz_primary, bucket_index]
    local_oper = rows.ts_us + offsets[np.maximum(tz_oper, 0), bucket_index]
    lam = n_legit * m_share[m] * dens[m_class[m], bucket_index] / (b_len[bucket_index] / H_US)

    # --- authorisation latency: the response follows the request ------------------------------------
    lat_ms = r_latency.lognormal(np.log(p.latency_median_ms), p.latency_sigma, n) + np.where(virtual, 80.0, 0.0)
    response = rows.ts_us + np.clip(np.rint(lat_ms * 1000.0), 20_000, 8_000_000).astype(np.int64)

    return World(
        merchant_id=mid,
        arrival_seq=arrival_seq,
        ts_us=rows.ts_us,
        response_us=response,
        flow_id=flow_ids,
        party_id=party_id,
        account_id=account_id,
        instrument_id=instrument_id,
        device_id=device_id,
        ip_id=ip_id,
        session_id=session_id,
        amount_minor=rows.amount_minor,
        fraud=rows.campaign >= 0,
        campaign_code=rows.campaign,
        campaign_ids=campaign_ids,
        is_virtual=virtual,
        tz_primary=tz_primary,
        tz_operational=tz_oper,
        site_id=site_id,
        edge_id=edge_id,
        bucket_index=bucket_index,
        lambda_realised=lam,
        local_primary_us=local_primary,
        local_operational_us=local_oper,
        part_bounds=_part_bounds(group_start, n, req.n_parts),
        campaigns=campaigns,
        n_merchants=n_merch,
        n_parties=n_party,
    )


def _part_bounds(group_start: I64, n: int, n_parts: int) -> list[tuple[int, int]]:
    """Split rows into about equal parts whose cuts fall on merchant boundaries (a merchant per file)."""
    targets = (np.arange(1, n_parts) * n) // n_parts
    idx = np.searchsorted(group_start, targets, side="left")
    cuts = sorted({int(group_start[i]) for i in idx if i < len(group_start) and 0 < group_start[i] < n})
    edges = [0, *cuts, n]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]
