"""The graph the actor keeps in memory to compute each flow's features (pure logic, no I/O).

Postgres holds the durable state (flows, edges, watermarks); this is the part of it the features
read, shaped for as-of queries: every structure answers "before t" exactly, whatever later
observations it also holds, so a flow's answer depends only on the world before t.

- `adjacency`: per entity node, its identity-graph neighbours with the edge's first-seen time, kept
  sorted by that time, so "neighbours before t" is a prefix (in event-time order an append).
- `hours`: per device and ip node, per UTC hour, the parties seen with it and the first time in
  that hour: "seen in [floor_hour(t) - 24h, t)" is exact without a row per observation.

A batch is computed against `committed ∪ staged`: `stage` records the batch's observations in a
`Staged` overlay, `features` reads both, and `commit` folds the overlay in only once the batch's
transaction has committed, so a rolled-back batch leaves no trace here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Final

import msgspec

from ._definition import DEFINITION, HOUR_US, Definition

# Entity kinds in the low three bits of a node id: node = key << 3 | kind (exact for negative keys).
PARTY: Final = 0
ACCOUNT: Final = 1
INSTRUMENT: Final = 2
DEVICE: Final = 3
IP: Final = 4
MERCHANT: Final = 5
KINDS: Final = {"party": PARTY, "account": ACCOUNT, "instrument": INSTRUMENT, "device": DEVICE, "ip": IP,
                "merchant": MERCHANT}


def node(kind: int, key: int) -> int:
    return key << 3 | kind


def kind_of(n: int) -> int:
    return n & 7


class Observation(msgspec.Struct, frozen=True, gc=False):
    """One flow anchor as the graph sees it (ids already int64)."""

    flow_id: int
    ts_us: int
    merchant: int
    arrival_seq: int
    party: int
    account: int
    instrument: int
    device: int
    ip: int


class Features(msgspec.Struct, frozen=True, gc=False):
    device_party_count_24h: int
    ip_party_count_24h: int
    device_new_for_party: bool
    ip_new_for_party: bool
    instrument_account_count: int
    neighbourhood_2hop: int


class _Adjacency:
    """One node's neighbours, sorted by first-seen time (`times` and `nbrs` in step)."""

    __slots__ = ("first", "nbrs", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.nbrs: list[int] = []
        self.first: dict[int, int] = {}

    def add(self, nbr: int, ts: int) -> None:
        old = self.first.get(nbr)
        if old is not None:
            if old <= ts:
                return
            # A late observation moved the edge's first sighting earlier: re-place it.
            i = bisect_left(self.times, old)
            while self.nbrs[i] != nbr:
                i += 1
            del self.times[i], self.nbrs[i]
        self.first[nbr] = ts
        if not self.times or ts >= self.times[-1]:
            self.times.append(ts)
            self.nbrs.append(nbr)
        else:
            i = bisect_right(self.times, ts)
            self.times.insert(i, ts)
            self.nbrs.insert(i, nbr)

    def before(self, t: int) -> int:
        """How many neighbours were first seen before t (they are the first that many)."""
        times = self.times
        return len(times) if not times or times[-1] < t else bisect_left(times, t)


@dataclass
class Staged:
    """One batch's observations, not yet committed: edges new or seen earlier than known, hour presence."""

    first: dict[int, dict[int, int]] = field(default_factory=dict)  # node -> neighbour -> first seen
    hours: dict[int, dict[int, dict[int, int]]] = field(default_factory=dict)  # node -> hour -> party -> ts
    new_nodes: set[int] = field(default_factory=set)


class GraphState:
    def __init__(self, definition: Definition = DEFINITION) -> None:
        self.definition = definition
        self.adjacency: dict[int, _Adjacency] = {}
        self.hours: dict[int, dict[int, dict[int, int]]] = {}
        # hour -> the nodes with presence in it, so pruning touches only what it drops.
        self._hour_nodes: dict[int, set[int]] = {}
        self.merchants: set[int] = set()
        self.entities: dict[int, int] = dict.fromkeys(KINDS.values(), 0)

    # ------------------------------------------------------------------ building

    def stage(self, st: Staged, o: Observation) -> None:
        t = o.ts_us
        p, a, i = node(PARTY, o.party), node(ACCOUNT, o.account), node(INSTRUMENT, o.instrument)
        d, x = node(DEVICE, o.device), node(IP, o.ip)
        for u, v in ((p, a), (a, i), (p, d), (p, x), (d, x)):
            self._stage_edge(st, u, v, t)
        h = t // HOUR_US
        self._stage_hour(st, d, h, o.party, t)
        self._stage_hour(st, x, h, o.party, t)
        m = node(MERCHANT, o.merchant)
        if m not in self.merchants:
            st.new_nodes.add(m)

    def _stage_edge(self, st: Staged, u: int, v: int, t: int) -> None:
        adj = self.adjacency.get(u)
        if adj is None:
            st.new_nodes.add(u)
        else:
            old = adj.first.get(v)
            if old is not None and old <= t:
                return
        if v not in self.adjacency:
            st.new_nodes.add(v)
        su = st.first.get(u)
        if su is None:
            su = st.first[u] = {}
        cur = su.get(v)
        if cur is None or t < cur:
            su[v] = t
            sv = st.first.get(v)
            if sv is None:
                sv = st.first[v] = {}
            sv[u] = t

    def _stage_hour(self, st: Staged, n: int, h: int, party: int, t: int) -> None:
        base = self.hours.get(n)
        if base is not None:
            bucket = base.get(h)
            if bucket is not None:
                old = bucket.get(party)
                if old is not None and old <= t:
                    return
        by_hour = st.hours.get(n)
        if by_hour is None:
            by_hour = st.hours[n] = {}
        bucket = by_hour.get(h)
        if bucket is None:
            bucket = by_hour[h] = {}
        cur = bucket.get(party)
        if cur is None or t < cur:
            bucket[party] = t

    def commit(self, st: Staged) -> None:
        """Fold a committed batch in."""
        for u, nbrs in st.first.items():
            adj = self.adjacency.get(u)
            if adj is None:
                adj = self.adjacency[u] = _Adjacency()
            for v, t in sorted(nbrs.items(), key=lambda kv: kv[1]):
                adj.add(v, t)
        for n, by_hour in st.hours.items():
            for h, parties in by_hour.items():
                self.add_presence(n, h, parties)
        for n in st.new_nodes:
            if kind_of(n) == MERCHANT:
                self.merchants.add(n)
            self.entities[kind_of(n)] += 1

    def add_presence(self, n: int, h: int, parties: dict[int, int]) -> None:
        base = self.hours.get(n)
        if base is None:
            base = self.hours[n] = {}
        bucket = base.get(h)
        if bucket is None:
            base[h] = dict(parties)
            self._hour_nodes.setdefault(h, set()).add(n)
            return
        for party, t in parties.items():
            old = bucket.get(party)
            if old is None or t < old:
                bucket[party] = t

    def load_edge(self, u: int, v: int, first_seen: int) -> None:
        """Restore one committed identity edge (in first-seen order, so each is an append)."""
        for a, b in ((u, v), (v, u)):
            adj = self.adjacency.get(a)
            if adj is None:
                adj = self.adjacency[a] = _Adjacency()
                self.entities[kind_of(a)] += 1
            adj.add(b, first_seen)

    def load_merchant(self, key: int) -> None:
        m = node(MERCHANT, key)
        if m not in self.merchants:
            self.merchants.add(m)
            self.entities[MERCHANT] += 1

    def prune_hours(self, keep_from_hour: int) -> None:
        """Forget hour presence before `keep_from_hour` (no feature computed from now on reads it)."""
        for h in [h for h in self._hour_nodes if h < keep_from_hour]:
            for n in self._hour_nodes.pop(h):
                by_hour = self.hours.get(n)
                if by_hour is not None:
                    by_hour.pop(h, None)
                    if not by_hour:
                        del self.hours[n]

    # ------------------------------------------------------------------ features (as of o.ts_us, exclusive)

    def features(self, st: Staged, o: Observation) -> Features:
        t = o.ts_us
        p, a, i = node(PARTY, o.party), node(ACCOUNT, o.account), node(INSTRUMENT, o.instrument)
        d, x = node(DEVICE, o.device), node(IP, o.ip)
        cap = self.definition.distinct_cap
        return Features(
            device_party_count_24h=self._window_parties(st, d, t, cap),
            ip_party_count_24h=self._window_parties(st, x, t, cap),
            device_new_for_party=not self._seen_before(st, p, d, t),
            ip_new_for_party=not self._seen_before(st, p, x, t),
            instrument_account_count=self._degree_before(st, i, t),
            neighbourhood_2hop=self._reach(st, (p, a, i, d, x), t, self.definition.neighbourhood_cap),
        )

    def _seen_before(self, st: Staged, u: int, v: int, t: int) -> bool:
        adj = self.adjacency.get(u)
        if adj is not None:
            first = adj.first.get(v)
            if first is not None and first < t:
                return True
        staged = st.first.get(u)
        if staged is not None:
            first = staged.get(v)
            return first is not None and first < t
        return False

    def _degree_before(self, st: Staged, u: int, t: int) -> int:
        adj = self.adjacency.get(u)
        count = adj.before(t) if adj is not None else 0
        staged = st.first.get(u)
        if staged:
            for v, first in staged.items():
                if first < t:
                    # Staged edges are new, or seen earlier than committed: count each edge once.
                    old = adj.first.get(v) if adj is not None else None
                    if old is None or old >= t:
                        count += 1
        return count

    def _window_parties(self, st: Staged, n: int, t: int, cap: int) -> int:
        h = t // HOUR_US
        start = h - self.definition.window_hours
        parties: set[int] = set()
        for source in (self.hours.get(n), st.hours.get(n)):
            if not source:
                continue
            # A node is active in few hours: walk those rather than every hour of the window.
            for hh, bucket in source.items():
                if start <= hh < h:
                    parties.update(bucket)  # whole hours before t's hour: all of it is before t
                    if len(parties) >= cap:
                        return cap
                elif hh == h:
                    for party, first in bucket.items():
                        if first < t:
                            parties.add(party)
        return min(cap, len(parties))

    def _reach(self, st: Staged, seeds: tuple[int, ...], t: int, cap: int) -> int:
        """min(cap, entities within two hops of `seeds` before t, seeds excluded).

        Bounded: each visited node yields at most |seen| repeats before a new entity, and the walk
        stops at `cap` new entities, so it reads O(cap^2) neighbours at most, whatever the degrees.
        """
        seen = set(seeds)
        count = 0
        frontier: list[int] = list(seeds)
        adjacency, staged = self.adjacency, st.first
        for _hop in range(2):
            found: list[int] = []
            for n in frontier:
                adj = adjacency.get(n)
                if adj is not None:
                    nbrs = adj.nbrs
                    for k in range(adj.before(t)):
                        b = nbrs[k]
                        if b not in seen:
                            seen.add(b)
                            count += 1
                            if count >= cap:
                                return cap
                            found.append(b)
                extra = staged.get(n)
                if extra:
                    for b, first in extra.items():
                        if first < t and b not in seen:
                            seen.add(b)
                            count += 1
                            if count >= cap:
                                return cap
                            found.append(b)
            frontier = found
        return count
