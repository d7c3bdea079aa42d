"""The online computation: per key, buckets (tiles) of aggregates and running window totals over them.

Definition (the same as `offline.py`, from the same `FeatureDefinitions`): for a flow at event time
t, with bucket b and k = t // b, window W of n = W / b buckets aggregates the events e of the same key
value with (k - n + 1) * b <= ts_e < t: the n - 1 whole buckets before the flow's own bucket plus the
part of its own bucket strictly before t. Amounts are integer minor units, so sums are exact.

Per key value the state is the list of its buckets (index, count, sum, max, counterparties) and, per
window, a running total over the buckets [cur_k - n + 1, cur_k] where cur_k is the bucket of the
key's latest query. Flows are released in event-time order (the actor sees to it), so a key is
queried at non-decreasing t and each query only *advances* the windows: buckets that fall out are
subtracted (count, sum), their counterparties leave the distinct count when that bucket held their
latest occurrence, and the max is recomputed only when the bucket holding it leaves. Everything is
O(1) amortised per event per window; nothing rescans.

Exactness needs the state to hold exactly the events before t when a flow is queried:
- events at exactly t (ties) may already be folded: a query at the key's latest folded ts answers
  with the values computed just before the first event at that ts was folded (`pre`);
- a *late* event (ts before the key's latest folded ts: the stream order was broken) is folded into
  its bucket, and into every running window whose range covers that bucket, so every later query
  counts it. The late flow's own vector is computed by scanning its buckets; its own bucket may then
  hold events after it, so that vector is flagged (`exact` False) and counted.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

from ._definitions import FeatureDefinitions

# Slots per window in `_Key.win`: first bucket position, count, sum, max (None: recompute), distinct.
_LO, _CNT, _SUM, _MAX, _ND = range(5)
_W = 5
# Buckets before every window are dropped once this many have piled up (amortised front deletion).
_PRUNE_AT = 64


class _Key:
    """One key value's buckets (parallel lists, sorted by bucket index) and running windows."""

    __slots__ = ("cur_k", "last_ts", "pre", "seen", "tc", "tcp", "tk", "tmax", "tsum", "win")

    def __init__(self, n_windows: int) -> None:
        self.tk: list[int] = []  # bucket index
        self.tc: list[int] = []  # events
        self.tsum: list[int] = []  # amount sum (minor units)
        self.tmax: list[int] = []  # amount max
        self.tcp: list[Any] = []  # counterparties: one value, or a set when several
        self.win: list[Any] = [0, 0, 0, 0, 0] * n_windows
        # counterparty -> the latest bucket it occurs in (entries leave with the longest window)
        self.seen: dict[int, int] = {}
        self.last_ts = -1  # latest folded event time (µs)
        self.pre: list[int] | None = None  # the values as of last_ts (what a tie at last_ts gets)
        self.cur_k = -(1 << 62)  # the bucket the windows are positioned at


class FeatureKernel:
    """Computes each flow's vector from the events folded before it, then folds the flow in."""

    def __init__(self, definitions: FeatureDefinitions) -> None:
        self.definitions = definitions
        self._b = definitions.bucket_us
        self._n = definitions.window_buckets
        self._keys = tuple((key_i, cp_i) for _, key_i, cp_i in definitions.keys)
        # (offset of the window's slots in `_Key.win`, its bucket count), shortest window first.
        self._jn = tuple((w * _W, n) for w, n in enumerate(self._n))
        self._state: list[dict[int, _Key]] = [{} for _ in self._keys]
        self.late_events = 0

    def key_count(self) -> int:
        return sum(len(s) for s in self._state)

    def apply(self, ts_us: int, amount_minor: int, entities: Sequence[int]) -> tuple[list[int], bool]:
        """The flow's vector as of ts_us (excluding itself), then the flow folded in; and whether
        the vector is exact (False for a late flow: one older than something already folded)."""
        k = ts_us // self._b
        out: list[int] = []
        exact = True
        n_windows = len(self._n)
        for states, (key_i, cp_i) in zip(self._state, self._keys, strict=True):
            key = entities[key_i]
            st = states.get(key)
            if st is None:
                st = states[key] = _Key(n_windows)
            if ts_us > st.last_ts:
                if k != st.cur_k:
                    self._advance(st, k)
                values = self._values(st)
                st.pre = values
                st.last_ts = ts_us
            elif ts_us == st.last_ts and st.pre is not None:
                values = st.pre
            else:
                values = self._scan(st, k)
                exact = False
                if ts_us < st.last_ts:
                    # Folded into windows `pre` was computed from, so `pre` no longer holds.
                    st.pre = None
            self._fold(st, k, amount_minor, entities[cp_i])
            out.extend(values)
        if not exact:
            self.late_events += 1
        return out, exact

    # ------------------------------------------------------------------------------------------

    def _advance(self, st: _Key, k: int) -> None:
        """Move every window to end at bucket k, subtracting the buckets that leave."""
        st.cur_k = k
        tk, tc, tsum, tmax, tcp, win, seen = st.tk, st.tc, st.tsum, st.tmax, st.tcp, st.win, st.seen
        size = len(tk)
        last = (len(self._n) - 1) * _W
        for j, n in self._jn:
            lo = win[j]
            start = k - n + 1
            if lo >= size or tk[lo] >= start:
                continue
            cnt, sm, mx, nd = win[j + 1], win[j + 2], win[j + 3], win[j + 4]
            while lo < size and tk[lo] < start:
                cnt -= tc[lo]
                sm -= tsum[lo]
                if mx is not None and tmax[lo] >= mx:
                    mx = None
                bucket, cps = tk[lo], tcp[lo]
                for cp in (cps if isinstance(cps, set) else (cps,)):
                    if seen.get(cp) == bucket:  # this bucket held its latest occurrence
                        nd -= 1
                        if j == last:  # no window sees it any more
                            del seen[cp]
                lo += 1
            win[j], win[j + 1], win[j + 2], win[j + 3], win[j + 4] = lo, cnt, sm, mx, nd
        drop = win[last]
        if drop >= _PRUNE_AT and drop * 2 >= size:
            self._prune(st, drop)

    @staticmethod
    def _prune(st: _Key, drop: int) -> None:
        # Buckets before the longest window: already subtracted everywhere, except late ones
        # inserted there, whose counterparties may still sit in `seen`.
        for bucket, cps in zip(st.tk[:drop], st.tcp[:drop], strict=True):
            for cp in (cps if isinstance(cps, set) else (cps,)):
                if st.seen.get(cp) == bucket:
                    del st.seen[cp]
        for column in (st.tk, st.tc, st.tsum, st.tmax, st.tcp):
            del column[:drop]
        win = st.win
        for j in range(0, len(win), _W):
            win[j] -= drop

    def _values(self, st: _Key) -> list[int]:
        win, tmax = st.win, st.tmax
        out: list[int] = []
        for j, _ in self._jn:
            mx = win[j + 3]
            if mx is None:
                mx = win[j + 3] = max(tmax[win[j]:], default=0)
            out += (win[j + 1], win[j + 2], mx, win[j + 4])
        return out

    def _scan(self, st: _Key, k: int) -> list[int]:
        """Values from the buckets themselves (a late flow): whole own bucket included."""
        tk = st.tk
        hi = bisect_right(tk, k)
        out: list[int] = []
        for n in self._n:
            lo = bisect_left(tk, k - n + 1)
            cps: set[int] = set()
            for c in st.tcp[lo:hi]:
                if isinstance(c, set):
                    cps |= c
                else:
                    cps.add(c)
            out += (sum(st.tc[lo:hi]), sum(st.tsum[lo:hi]), max(st.tmax[lo:hi], default=0), len(cps))
        return out

    def _fold(self, st: _Key, k: int, amount: int, cp: int) -> None:
        tk, win = st.tk, st.win
        if tk and tk[-1] == k:
            p = len(tk) - 1
        elif not tk or tk[-1] < k:
            tk.append(k)
            st.tc.append(0)
            st.tsum.append(0)
            st.tmax.append(amount)
            st.tcp.append(cp)
            p = -1
        else:  # a late event: its bucket is somewhere before the newest one
            p = bisect_left(tk, k)
            if tk[p] != k:
                tk.insert(p, k)
                st.tc.insert(p, 0)
                st.tsum.insert(p, 0)
                st.tmax.insert(p, amount)
                st.tcp.insert(p, cp)
                for j, n in self._jn:
                    if k < st.cur_k - n + 1:  # inserted before this window's first bucket
                        win[j] += 1
        st.tc[p] += 1
        st.tsum[p] += amount
        if amount > st.tmax[p]:
            st.tmax[p] = amount
        cps = st.tcp[p]
        if isinstance(cps, set):
            cps.add(cp)
        elif cps != cp:
            st.tcp[p] = {cps, cp}
        old = st.seen.get(cp)
        cur_k = st.cur_k
        for j, n in self._jn:
            start = cur_k - n + 1
            if k < start:
                continue
            win[j + 1] += 1
            win[j + 2] += amount
            mx = win[j + 3]
            if mx is not None and amount > mx:
                win[j + 3] = amount
            if old is None or old < start:
                win[j + 4] += 1
        if old is None or k > old:
            st.seen[cp] = k
