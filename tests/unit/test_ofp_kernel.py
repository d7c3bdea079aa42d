"""The OFP kernel against the definition computed by brute force, and the definitions file's checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fraudrt.rtdl.online_feature_plane import DefinitionsError, load_definitions, parse_definitions
from fraudrt.rtdl.online_feature_plane._actor import format_us, ts_us
from fraudrt.rtdl.online_feature_plane._definitions import FeatureDefinitions
from fraudrt.rtdl.online_feature_plane._kernel import FeatureKernel

pytestmark = pytest.mark.unit

B = 10  # bucket seconds in these tests, so windows of 2, 5 and 30 buckets are quick to cross


def small_definitions() -> FeatureDefinitions:
    return parse_definitions({
        "id": "test", "version": 1, "bucket_seconds": B,
        "windows": {"20s": 2 * B, "50s": 5 * B, "5m": 30 * B},
        "keys": {"party": {"field": "party_id", "counterparty": "merchant_id"},
                 "merchant": {"field": "merchant_id", "counterparty": "instrument_id"}},
        "aggregates": ["count", "amount_sum_minor", "amount_max_minor", "distinct_counterparties"],
    })


def brute(defs: FeatureDefinitions, folded: list[tuple[int, int, tuple[int, ...]]], t: int,
          ents: tuple[int, ...]) -> list[int]:
    """The definition, literally: events of the same key with (k - n + 1) * b <= ts < t."""
    b = defs.bucket_us
    out: list[int] = []
    for _, key_i, cp_i in defs.keys:
        for n in defs.window_buckets:
            start = (t // b - n + 1) * b
            hits = [(a, e[cp_i]) for ts, a, e in folded if e[key_i] == ents[key_i] and start <= ts < t]
            out += [len(hits), sum(a for a, _ in hits), max((a for a, _ in hits), default=0),
                    len({cp for _, cp in hits})]
    return out


def events(rng: random.Random, n: int, *, tie_every: int = 0) -> list[tuple[int, int, tuple[int, ...]]]:
    """(ts, amount, entities) in event-time order, few key values so windows fill and empty."""
    ts = 1_700_000_000_000_000
    out = []
    for i in range(n):
        if not (tie_every and i % tie_every == 0):
            ts += rng.choice([1, 500_000, 3_000_000, 9_000_000, 40_000_000, 400_000_000])
        ents = (rng.randrange(4), rng.randrange(6), 0, rng.randrange(5), 0, 0)  # merchant, party, _, instrument
        out.append((ts, rng.randrange(1, 10_000), ents))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_in_order_vectors_equal_the_definition_ties_included(seed: int) -> None:
    defs = small_definitions()
    kernel = FeatureKernel(defs)
    folded: list[tuple[int, int, tuple[int, ...]]] = []
    for ts, amount, ents in events(random.Random(seed), 600, tie_every=3):
        values, exact = kernel.apply(ts, amount, ents)
        assert exact
        assert values == brute(defs, folded, ts, ents)
        folded.append((ts, amount, ents))


@pytest.mark.parametrize("seed", range(6))
def test_late_events_are_folded_into_their_bucket_and_counted_by_every_later_flow(seed: int) -> None:
    rng = random.Random(seed)
    defs = small_definitions()
    kernel = FeatureKernel(defs)
    stream = events(rng, 600, tie_every=4)
    # Move some events later in processing order (a broken stream order), by up to 20 positions.
    order = list(range(len(stream)))
    for _ in range(60):
        i = rng.randrange(len(order) - 20)
        order.insert(i + rng.randrange(1, 20), order.pop(i))
    folded: list[tuple[int, int, tuple[int, ...]]] = []
    inexact = 0
    for i in order:
        ts, amount, ents = stream[i]
        values, exact = kernel.apply(ts, amount, ents)
        if exact:
            # An exact answer is the definition over everything folded so far (late events included).
            assert values == brute(defs, folded, ts, ents)
        else:
            inexact += 1
        folded.append((ts, amount, ents))
    assert inexact > 0
    assert kernel.late_events == inexact


def test_a_long_gap_prunes_buckets_and_an_old_key_starts_empty() -> None:
    defs = small_definitions()
    kernel = FeatureKernel(defs)
    folded = []
    ts = 1_000_000_000_000_000
    for i in range(300):  # one key, many buckets: the front of the bucket list gets pruned
        ts += 7_000_000
        ents = (1, 1, 0, i % 3, 0, 0)
        values, _ = kernel.apply(ts, 100 + i, ents)
        assert values == brute(defs, folded, ts, ents)
        folded.append((ts, 100 + i, ents))
    ts += 10**12
    values, _ = kernel.apply(ts, 5, (1, 1, 0, 0, 0, 0))
    assert values == [0] * defs.width


def test_the_shipped_definitions_load_and_their_digest_ignores_comments(tmp_path: Path) -> None:
    defs = load_definitions()
    assert defs.width == len(defs.names) == 6 * 4 * 4
    assert defs.window_buckets == (5, 60, 1440, 10080)
    text = (Path(__file__).parents[2] / "config/features/online_feature_plane.yaml").read_text()
    copy = tmp_path / "f.yaml"
    copy.write_text("# another comment\n" + text)
    assert load_definitions(copy).digest == defs.digest
    copy.write_text(text.replace("bucket_seconds: 60", "bucket_seconds: 30"))
    assert load_definitions(copy).digest != defs.digest


@pytest.mark.parametrize(("change", "message"), [
    ({"bucket_seconds": 7}, "not a positive multiple"),
    ({"windows": {"a": 60, "b": 60}}, "same length"),
    ({"keys": {"party": {"field": "party_id", "counterparty": "fraud_flag"}}}, "not one of"),
    ({"keys": {"party": {"field": "party_id", "counterparty": "party_id"}}}, "itself"),
    ({"aggregates": ["count"]}, "aggregates must be"),
    ({"extra": 1}, "unknown field"),
])
def test_inconsistent_definitions_are_refused(change: dict[str, object], message: str) -> None:
    doc = {"id": "x", "version": 1, "bucket_seconds": 60, "windows": {"5m": 300},
           "keys": {"party": {"field": "party_id", "counterparty": "merchant_id"}},
           "aggregates": ["count", "amount_sum_minor", "amount_max_minor", "distinct_counterparties"], **change}
    with pytest.raises(DefinitionsError, match=message):
        parse_definitions(doc)


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00.000000Z", "2024-02-29T23:59:59.999999Z",
                                   "1999-12-31T12:34:56.000001Z"])
def test_ts_parsing_round_trips(value: str) -> None:
    assert format_us(ts_us(value)) == value


@pytest.mark.parametrize("value", ["2026-01-01", "2026-01-01T00:00:00Z", "2026-01-01T24:00:00.000000Z",
                                   "2026-01-01 00:00:00.000000Z", "2026-02-30T00:00:00.000000Z"])
def test_ts_parsing_refuses_other_shapes(value: str) -> None:
    with pytest.raises(ValueError):
        ts_us(value)
