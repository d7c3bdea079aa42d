"""IG's Postgres statements: each takes a whole batch as columns (`unnest`), never one event per call.

A batch costs: one claim statement (insert-or-report-existing, and the claim's `ig_claims` record),
one settle transaction (admissions as a HOT update, the claim's release, receipts index,
quarantines). Text columns travel packed (`fraudrt.runtime.pack_columns`: one delimited text per
column, split by the server), which costs the event loop ~1 µs per row instead of ~1 µs per value.
Statements answer with a row count, not a row per event: the rows are read back only when the
count says some event was not ours. Failures are judged by `fraudrt.runtime.classify`: a transient
one (unreachable, restarting, read-only, refused login, timeout) is `DependencyDown("ops_db")`, a
value Postgres refuses for good is `InvalidInput`, anything else is a bug and propagates.

Who holds a claim: every row and claim records its claimant's instance id (unique per process),
and each IG process holds a session advisory lock named by that id for its whole life
(`InstanceLock`). A claim whose claimant holds no lock belongs to a dead process and is healed at
once; a live claimant's claim only once it is older than the lease. Within a process, the claim
tokens of live requests are passed to the statements that take claims over, which never take them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import msgspec

from fraudrt.contracts import ig_receipt_id
from fraudrt.runtime import FailureKind, classify, pack_columns, split_sql

from ._errors import DependencyDown, InvalidInput, StillInFlight, dependency_down


class ClaimRow(msgspec.Struct, frozen=True):
    dedupe_key: str
    platform_run_id: str
    event_class: str
    event_id: str
    event_type: str
    payload_hash: str
    stream: str
    partition_key: str
    profile_id: str
    receipt_id: str  # of the ADMIT receipt: written now so that the settle changes no indexed column
    data: bytes


class ExistingRow(msgspec.Struct, frozen=True):
    dedupe_key: str
    state: str
    claim_token: str
    payload_hash: str
    claimed_by: str
    stale: bool
    eb_topic: str | None
    eb_partition: int | None
    eb_offset: str | None
    eb_published_at_utc: str | None
    admitted_at_utc: str | None
    receipt_ref: str | None
    duplicate_receipt_ref: str | None


class HealRow(msgspec.Struct, frozen=True):
    dedupe_key: str
    claim_token: str
    data: bytes


class AdmitCommit(msgspec.Struct, frozen=True):
    dedupe_key: str
    claim_token: str
    eb_topic: str
    eb_partition: int
    eb_offset: str
    eb_published_at_utc: str
    receipt_id: str
    receipt_ref: str
    batch_id: str | None


class ReceiptIndexRow(msgspec.Struct, frozen=True):
    platform_run_id: str
    receipt_id: str
    decision: str
    event_id: str | None
    event_type: str | None
    event_class: str | None
    dedupe_key: str | None
    reason_codes: list[str]
    eb_topic: str | None
    eb_partition: int | None
    eb_offset: str | None
    receipt_ref: str
    batch_id: str | None


class QuarantineIndexRow(msgspec.Struct, frozen=True):
    platform_run_id: str
    quarantine_id: str
    event_id: str | None
    event_type: str | None
    reason_code: str
    detail: str
    record_ref: str
    receipt_id: str


class SettleIndex(msgspec.Struct, frozen=True):
    """What a settle indexes besides its admissions, known once the evidence objects are written."""

    receipts: list[ReceiptIndexRow] = msgspec.field(default_factory=list)
    quarantines: list[QuarantineIndexRow] = msgspec.field(default_factory=list)
    duplicate_refs: list[tuple[str, str]] = msgspec.field(default_factory=list)  # (dedupe_key, receipt_ref)
    # (dedupe_key, receipt_ref, batch_id) of committed admissions whose receipt landed in another
    # object than the commit statement named (batch layout, after some of the batch was taken over).
    admit_refs: list[tuple[str, str, str | None]] = msgspec.field(default_factory=list)


# Given the keys the settle transaction decided (committed admissions, dropped rows), writes the
# evidence objects of exactly those (plus the batch's duplicates and quarantines) and says what to index.
Evidence = Callable[[set[str]], Awaitable[SettleIndex]]


def _pg_text(value: str | None) -> str | None:
    # Postgres text cannot hold NUL. Index rows of quarantined input may carry one (an event id
    # with "\u0000" is valid JSON); the evidence object keeps the exact value, the index a stand-in.
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def _db_failure(exc: Exception) -> Exception:
    """What IG raises for a failure of Postgres or its client: `DependencyDown("ops_db")` if
    transient, `InvalidInput` if Postgres refused a value for good, else `exc` itself (a bug)."""
    down = dependency_down("ops_db", exc)
    if down is not None:
        return down
    failure = classify(exc)
    if failure.kind == FailureKind.RECORD:
        return InvalidInput(failure.code, f"{type(exc).__name__}: {exc}")
    return exc


def _cols(rows: Sequence[Any], *names: str) -> list[list[Any]]:
    return [[getattr(r, n) for r in rows] for n in names]


def _packed(rows: Sequence[Any], *names: str) -> tuple[str | None, ...]:
    return pack_columns(_cols(rows, *names))


def _affected(status: str) -> int:
    """Rows an INSERT/UPDATE touched, from its command tag ("INSERT 0 12", "UPDATE 12")."""
    return int(status.rpartition(" ")[2])


_EXISTING_COLS: Final = ("a.dedupe_key, a.state, a.claim_token, a.payload_hash, a.claimed_by, "
                         "(a.claimed_at < now() - make_interval(secs => $2::float8)) AS stale, "
                         "a.eb_topic, a.eb_partition, a.eb_offset, a.eb_published_at_utc, a.admitted_at_utc, "
                         "a.receipt_ref, a.duplicate_receipt_ref")

# Claim what is new, and record the claim (one ig_claims row listing the keys it inserted: what
# the heal loop finds once the claim is stale). If fewer rows went in than were offered, the others
# already existed (or a concurrent claimant committed them while this statement waited on its
# conflict): the caller reads those back, a second round trip only when a push repeats events.
# Probing every key up front cost ~6 µs per new event.
_CLAIM_COLS: Final = split_sql(10)
_CLAIM_SQL: Final = f"""
WITH ins AS (
    INSERT INTO ig_admissions (dedupe_key, platform_run_id, event_class, event_id, event_type, payload_hash,
                               stream, partition_key, profile_id, receipt_id, data, state, claim_token, claimed_by)
    SELECT t.*, 'PUBLISH_PENDING', $14, $15
      FROM unnest({", ".join(_CLAIM_COLS)}, $13::bytea[])
        AS t(dedupe_key, platform_run_id, event_class, event_id, event_type, payload_hash, stream,
             partition_key, profile_id, receipt_id, data)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING dedupe_key
)
INSERT INTO ig_claims (claim_token, claimed_by, dedupe_keys, keys_total)
SELECT $14, $15, array_agg(dedupe_key), count(*) FROM ins HAVING count(*) > 0
RETURNING keys_total
"""


def _record_claim(source: str, token: str, claimed_by: str) -> str:
    """INSERT of the ig_claims row for the keys in CTE `source`; a claim that gains keys later
    (a take-over under the same token) lists them in the same row."""
    return f"""INSERT INTO ig_claims (claim_token, claimed_by, dedupe_keys, keys_total)
        SELECT {token}, {claimed_by}, array_agg(dedupe_key), count(*) FROM {source} HAVING count(*) > 0
            ON CONFLICT (claim_token) DO UPDATE SET dedupe_keys = ig_claims.dedupe_keys || EXCLUDED.dedupe_keys,
                                                    keys_total = ig_claims.keys_total + EXCLUDED.keys_total"""


_SELECT_SQL: Final = f"SELECT {_EXISTING_COLS} FROM ig_admissions a WHERE a.dedupe_key = ANY($1::text[])"

# A take-over is a compare-and-swap on the claim token the caller saw: it takes exactly the claim
# it judged dead (its own failed request's, or one past the lease), never one taken since.
_TAKEOVER_SQL: Final = f"""
WITH taken AS (
    UPDATE ig_admissions a SET claim_token = $5, claimed_by = $6, claimed_at = now(),
           publish_attempts = publish_attempts + 1
      FROM unnest({", ".join(split_sql(2))}) AS u(dedupe_key, seen)
     WHERE a.dedupe_key = u.dedupe_key AND a.claim_token = u.seen AND a.state = 'PUBLISH_PENDING'
    RETURNING a.dedupe_key
), recorded AS ({_record_claim("taken", "$5", "$6")})
SELECT dedupe_key FROM taken
"""

# Liveness: each IG process holds a session advisory lock (two-key form: this namespace and the
# 32-bit hashtext of its instance id) for its life; Postgres drops it with the session, so a
# claimant whose lock is gone is dead. A hash collision can only make a dead claimant look alive
# (its claims then wait for the lease), never the reverse.
_LOCK_NS: Final = 0x49470001
_LOCK_SQL: Final = f"SELECT pg_try_advisory_lock({_LOCK_NS}, hashtext($1::text))"
_UNLOCK_SQL: Final = f"SELECT pg_advisory_unlock({_LOCK_NS}, hashtext($1::text))"
_LIVE_CTE: Final = f"""live AS (
    SELECT l.objid::bigint AS h FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = {_LOCK_NS}
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""


def _orphaned(alias: str) -> str:
    """SQL: the claim (ig_claims row or ig_admissions row `alias`) is past the lease ($3) or its
    claimant is dead, and no live request of the healing process holds it ($5)."""
    return (f"({alias}.claimed_at < now() - make_interval(secs => $3::float8)"
            f" OR (hashtext({alias}.claimed_by)::bigint & 4294967295) NOT IN (SELECT h FROM live))"
            f" AND {alias}.claim_token <> ALL($5::text[])")


# Orphaned claims are consumed whole; of their keys, the rows still pending under an orphaned claim
# of their own are taken under a new claim, recorded like any other. A key another live claimant
# took over since is left to that claimant's record.
_HEAL_SQL: Final = f"""
WITH {_LIVE_CTE}, stale AS (
    DELETE FROM ig_claims c
     WHERE c.claim_token IN (
           SELECT x.claim_token FROM ig_claims x WHERE {_orphaned("x")}
            ORDER BY x.claimed_at LIMIT $4 FOR UPDATE SKIP LOCKED)
    RETURNING c.dedupe_keys
), taken AS (
    UPDATE ig_admissions a SET claim_token = $1, claimed_by = $2, claimed_at = now(),
           publish_attempts = publish_attempts + 1
      FROM (SELECT DISTINCT unnest(dedupe_keys) AS dedupe_key FROM stale) AS p
     WHERE a.dedupe_key = p.dedupe_key AND a.state = 'PUBLISH_PENDING' AND {_orphaned("a")}
    RETURNING a.dedupe_key, a.claim_token, a.data
), recorded AS ({_record_claim("taken", "$1", "$2")})
SELECT (SELECT count(*) FROM stale) AS consumed, t.dedupe_key, t.claim_token, t.data
  FROM (SELECT 1) AS one LEFT JOIN taken AS t ON true
"""

# A pending row the heal found no longer admissible (over the record limit, or refused by a changed
# policy) is quarantined: its row goes, in the settle transaction, if the heal's claim still holds it.
_DROP_SQL: Final = f"""
DELETE FROM ig_admissions a USING unnest({", ".join(split_sql(2))}) AS u(dedupe_key, claim_token)
 WHERE a.dedupe_key = u.dedupe_key AND a.claim_token = u.claim_token AND a.state = 'PUBLISH_PENDING'
RETURNING a.dedupe_key, a.claim_token
"""

_ADMIT_REFS_SQL: Final = f"""
UPDATE ig_admissions a SET receipt_ref = u.receipt_ref, receipt_batch_id = u.batch_id
  FROM unnest({", ".join(split_sql(3))}) AS u(dedupe_key, receipt_ref, batch_id)
 WHERE a.dedupe_key = u.dedupe_key
"""

# A claim whose every key is settled is done; one with keys left pending (skipped, or lost to a
# take-over that records them itself) stays for the heal loop.
_RELEASE_SQL: Final = f"""
DELETE FROM ig_claims c
 USING unnest({", ".join(split_sql(2, casts=["text", "int"]))}) AS u(claim_token, settled)
 WHERE c.claim_token = u.claim_token AND c.keys_total <= u.settled
"""

# Only the current claimant's token turns a row ADMITTED; the row is the ADMIT receipt's index
# entry (receipt_id, receipt_ref, eb_ref). The envelope is dropped: nothing re-publishes an ADMITTED row.
_COMMIT_COLS: Final = split_sql(9, casts=["text", "text", "text", "int", "text", "text", "text", "text", "text"])
_COMMIT_SQL: Final = f"""
UPDATE ig_admissions a
   SET state = 'ADMITTED', data = NULL, eb_topic = u.eb_topic, eb_partition = u.eb_partition,
       eb_offset = u.eb_offset, eb_published_at_utc = u.eb_published_at_utc,
       admitted_at_utc = u.eb_published_at_utc, receipt_id = u.receipt_id, receipt_ref = u.receipt_ref,
       receipt_batch_id = u.batch_id
  FROM unnest({", ".join(_COMMIT_COLS)})
    AS u(dedupe_key, claim_token, eb_topic, eb_partition, eb_offset, eb_published_at_utc, receipt_id,
         receipt_ref, batch_id)
 WHERE a.dedupe_key = u.dedupe_key AND a.claim_token = u.claim_token AND a.state = 'PUBLISH_PENDING'
"""

# After a commit that touched fewer rows than it was given: which rows it touched (the others were
# taken over by another claimant). A row's current version carries the id of the transaction that
# wrote it (xmin), and this statement is the settle transaction's only write to these rows so far.
# (The settle is a top-level transaction: inside a savepoint, xmin would be the savepoint's xid.)
_COMMITTED_SQL: Final = """
SELECT dedupe_key FROM ig_admissions
 WHERE dedupe_key = ANY($1::text[]) AND xmin::text::bigint = txid_current() % 4294967296
"""

_RECEIPTS_COLS: Final = split_sql(13, casts=["text"] * 9 + ["int", "text", "text", "text"])
_RECEIPTS_SQL: Final = f"""
INSERT INTO ig_receipts (platform_run_id, receipt_id, decision, event_id, event_type, event_class, dedupe_key,
                         reason_codes, eb_topic, eb_partition, eb_offset, receipt_ref, batch_id)
SELECT t.platform_run_id, t.receipt_id, t.decision, t.event_id, t.event_type, t.event_class, t.dedupe_key,
       string_to_array(t.reason_codes, ','), t.eb_topic, t.eb_partition, t.eb_offset, t.receipt_ref, t.batch_id
  FROM unnest({", ".join(_RECEIPTS_COLS)})
    AS t(platform_run_id, receipt_id, decision, event_id, event_type, event_class, dedupe_key, reason_codes,
         eb_topic, eb_partition, eb_offset, receipt_ref, batch_id)
ON CONFLICT (platform_run_id, receipt_id) DO NOTHING
"""

_QUARANTINES_SQL: Final = f"""
INSERT INTO ig_quarantines (platform_run_id, quarantine_id, event_id, event_type, reason_code, detail,
                            record_ref, receipt_id)
SELECT * FROM unnest({", ".join(split_sql(8))})
ON CONFLICT (platform_run_id, quarantine_id) DO NOTHING
"""

_DUP_REF_SQL: Final = f"""
UPDATE ig_admissions a SET duplicate_receipt_ref = t.ref
  FROM unnest({", ".join(split_sql(2))}) AS t(dedupe_key, ref)
 WHERE a.dedupe_key = t.dedupe_key AND a.duplicate_receipt_ref IS NULL
"""

_LOOKUP_COLS_R: Final = ("r.platform_run_id, r.receipt_id, r.decision, r.event_id, r.event_type, r.event_class, "
                         "r.dedupe_key, r.reason_codes, r.eb_topic, r.eb_partition, r.eb_offset, r.receipt_ref, "
                         "r.batch_id, r.created_at")
_LOOKUP_COLS_A: Final = ("a.platform_run_id, a.receipt_id, 'ADMIT'::text, a.event_id, a.event_type, a.event_class, "
                         "a.dedupe_key, '{}'::text[], a.eb_topic, a.eb_partition, a.eb_offset, a.receipt_ref, "
                         "a.receipt_batch_id, a.created_at")


def _existing(record: Any) -> ExistingRow:
    return ExistingRow(
        dedupe_key=record["dedupe_key"], state=record["state"], claim_token=record["claim_token"],
        payload_hash=record["payload_hash"],
        claimed_by=record["claimed_by"], stale=bool(record["stale"]), eb_topic=record["eb_topic"],
        eb_partition=record["eb_partition"], eb_offset=record["eb_offset"],
        eb_published_at_utc=record["eb_published_at_utc"], admitted_at_utc=record["admitted_at_utc"],
        receipt_ref=record["receipt_ref"], duplicate_receipt_ref=record["duplicate_receipt_ref"],
    )


class AdmissionStore:
    """The IG tables behind the pool; `timeout` bounds every statement so a hung server is a 503, not a hang."""

    def __init__(self, pool: Any, *, timeout: float = 10.0) -> None:
        self.pool = pool
        self.timeout = timeout

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                yield conn
        except (DependencyDown, StillInFlight, InvalidInput):
            raise  # already decided (a settle's evidence callback runs inside the transaction)
        except Exception as exc:
            err = _db_failure(exc)
            if err is exc:
                raise
            raise err from exc

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1", timeout=self.timeout)

    async def claim(self, rows: Sequence[ClaimRow], token: str, me: str, lease: float
                    ) -> tuple[set[str], dict[str, ExistingRow]]:
        """(keys this claim inserted, the existing row of every other key), in one connection."""
        if not rows:
            return set(), {}
        cols = _packed(rows, "dedupe_key", "platform_run_id", "event_class", "event_id", "event_type",
                       "payload_hash", "stream", "partition_key", "profile_id", "receipt_id")
        async with self._conn() as conn:
            inserted = await conn.fetchval(_CLAIM_SQL, *cols, [r.data for r in rows], token, me, timeout=self.timeout)
            if inserted == len(rows):
                return {r.dedupe_key for r in rows}, {}
            found = await self._select(conn, [r.dedupe_key for r in rows], lease)
        claimed = {k for k, row in found.items() if row.claim_token == token}
        return claimed, {k: row for k, row in found.items() if row.claim_token != token}

    async def select(self, keys: Sequence[str], lease: float) -> dict[str, ExistingRow]:
        if not keys:
            return {}
        async with self._conn() as conn:
            return await self._select(conn, keys, lease)

    async def _select(self, conn: Any, keys: Sequence[str], lease: float) -> dict[str, ExistingRow]:
        records = await conn.fetch(_SELECT_SQL, list(keys), lease, timeout=self.timeout)
        return {r["dedupe_key"]: _existing(r) for r in records}

    async def take_over(self, seen: dict[str, str], token: str, me: str) -> set[str]:
        """Re-claim PENDING rows still under the claim token the caller saw (dedupe_key -> token):
        a claim the caller judged dead. Returns the keys now under `token`."""
        if not seen:
            return set()
        cols = pack_columns([list(seen), list(seen.values())])
        async with self._conn() as conn:
            records = await conn.fetch(_TAKEOVER_SQL, *cols, token, me, timeout=self.timeout)
        return {r["dedupe_key"] for r in records}

    async def claim_orphans(self, token: str, me: str, lease: float, claims: int,
                            live_tokens: Collection[str] = ()) -> tuple[int, list[HealRow]]:
        """Take over up to `claims` orphaned claims (past the lease, or made by a dead instance) that
        hold none of `live_tokens` (the live requests of the caller's process): (how many claims
        were consumed, their rows still pending and orphaned, now under `token`)."""
        async with self._conn() as conn:
            records = await conn.fetch(_HEAL_SQL, token, me, lease, claims, list(live_tokens), timeout=self.timeout)
        consumed = records[0]["consumed"] if records else 0
        return consumed, [HealRow(r["dedupe_key"], r["claim_token"], bytes(r["data"])) for r in records if r["data"]]

    async def settle(self, admits: Sequence[AdmitCommit], evidence: Evidence,
                     drops: Sequence[tuple[str, str]] = ()) -> set[str]:
        """One transaction: ADMITTED + eb_ref for the rows our claims still hold (and, for `drops`,
        (dedupe_key, claim_token) of pending rows found inadmissible, their deletion); then, with
        those rows locked, `evidence` writes the objects of exactly what was decided; then the index
        rows. Returns the keys decided.

        Holding the row locks across the object writes is what keeps an ADMIT receipt object and its
        row in agreement: no other claimant can take a row over (or commit it) while its object is
        written, and one that took it over before finds nothing to commit and writes nothing. A
        crash or failure before COMMIT leaves the row pending, and whoever commits it later
        rewrites the object with the eb_ref it commits.
        """
        decided: set[str] = set()
        settled: Counter[str] = Counter()
        async with self._conn() as conn, conn.transaction():
            if admits:  # also their receipts' index entries (see _COMMIT_SQL)
                cols = pack_columns([
                    [a.dedupe_key for a in admits], [a.claim_token for a in admits], [a.eb_topic for a in admits],
                    [str(a.eb_partition) for a in admits], *_cols(admits, "eb_offset", "eb_published_at_utc",
                                                                  "receipt_id", "receipt_ref", "batch_id")])
                status = await conn.execute(_COMMIT_SQL, *cols, timeout=self.timeout)
                if _affected(status) == len(admits):
                    decided = {a.dedupe_key for a in admits}
                else:
                    records = await conn.fetch(_COMMITTED_SQL, [a.dedupe_key for a in admits],
                                               timeout=self.timeout)
                    decided = {r["dedupe_key"] for r in records}
                settled.update(a.claim_token for a in admits if a.dedupe_key in decided)
            if drops:
                records = await conn.fetch(_DROP_SQL, *pack_columns([[k for k, _ in drops], [t for _, t in drops]]),
                                           timeout=self.timeout)
                decided.update(r["dedupe_key"] for r in records)
                settled.update(r["claim_token"] for r in records)
            index = await evidence(decided)
            if index.admit_refs:
                cols = pack_columns([[k for k, _, _ in index.admit_refs], [r for _, r, _ in index.admit_refs],
                                     [b for _, _, b in index.admit_refs]])
                await conn.execute(_ADMIT_REFS_SQL, *cols, timeout=self.timeout)
            if settled:
                await conn.execute(_RELEASE_SQL, *pack_columns([list(settled), [str(n) for n in settled.values()]]),
                                   timeout=self.timeout)
            receipts = index.receipts
            if receipts:
                cols = pack_columns([
                    *_cols(receipts, "platform_run_id", "receipt_id", "decision"),
                    [_pg_text(r.event_id) for r in receipts], [_pg_text(r.event_type) for r in receipts],
                    [r.event_class for r in receipts], [_pg_text(r.dedupe_key) for r in receipts],
                    [",".join(r.reason_codes) for r in receipts], [r.eb_topic for r in receipts],
                    [None if r.eb_partition is None else str(r.eb_partition) for r in receipts],
                    *_cols(receipts, "eb_offset", "receipt_ref", "batch_id")])
                await conn.execute(_RECEIPTS_SQL, *cols, timeout=self.timeout)
            quarantines = index.quarantines
            if quarantines:
                cols = pack_columns([
                    *_cols(quarantines, "platform_run_id", "quarantine_id"),
                    [_pg_text(q.event_id) for q in quarantines], [_pg_text(q.event_type) for q in quarantines],
                    [q.reason_code for q in quarantines], [_pg_text(q.detail) for q in quarantines],
                    *_cols(quarantines, "record_ref", "receipt_id")])
                await conn.execute(_QUARANTINES_SQL, *cols, timeout=self.timeout)
            if index.duplicate_refs:
                cols = pack_columns([[k for k, _ in index.duplicate_refs], [r for _, r in index.duplicate_refs]])
                await conn.execute(_DUP_REF_SQL, *cols, timeout=self.timeout)
        return decided

    async def lookup(self, *, event_id: str | None = None, receipt_id: str | None = None,
                     platform_run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Receipts by event id and/or receipt id: DUPLICATE/QUARANTINE rows of ig_receipts, ADMITs from ig_admissions.

        An ADMIT receipt's id is a function of the event id, so both lookups reach an admission by
        its receipt_id index.
        """
        if event_id is None and receipt_id is None:
            raise ValueError("lookup needs event_id or receipt_id")
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        where_r: list[str] = []
        rid = arg(receipt_id or ig_receipt_id("ADMIT", event_id or ""))
        where_a = [f"a.receipt_id = {rid}"]
        if event_id is not None:
            p = arg(event_id)
            where_r.append(f"r.event_id = {p}")
            where_a.append(f"a.event_id = {p}")
        if receipt_id is not None:
            where_r.append(f"r.receipt_id = {rid}")
        if platform_run_id is not None:
            p = arg(platform_run_id)
            where_r.append(f"r.platform_run_id = {p}")
            where_a.append(f"a.platform_run_id = {p}")
        sql = (f"SELECT * FROM (SELECT {_LOOKUP_COLS_R} FROM ig_receipts r WHERE {' AND '.join(where_r)} "
               f"UNION ALL SELECT {_LOOKUP_COLS_A} FROM ig_admissions a "
               f"WHERE a.state = 'ADMITTED' AND {' AND '.join(where_a)} AND NOT EXISTS "
               # ADMIT rows written to ig_receipts before migration 002 are listed once, from there.
               f"(SELECT 1 FROM ig_receipts o WHERE o.platform_run_id = a.platform_run_id "
               f"AND o.receipt_id = a.receipt_id)) x ORDER BY created_at, receipt_id LIMIT {arg(limit)}")
        async with self._conn() as conn:
            records = await conn.fetch(sql, *args, timeout=self.timeout)
        out = []
        for r in records:
            row = dict(r)
            row["created_at"] = row["created_at"].isoformat()
            out.append(row)
        return out


class InstanceLock:
    """This process's liveness in Postgres: a session advisory lock named by its instance id, held
    on a connection of its own for the process's life (see the module docstring).

    `acquire` picks the id (`base` and a random suffix, unique per process) and takes the lock;
    `ensure` re-takes it on a fresh connection after the old one broke (a Postgres restart).
    While it is lost, other instances may heal this process's claims: its own settles then find
    nothing to commit (503, a duplicate on the bus at worst), never a wrong receipt.
    """

    def __init__(self, pool: Any, *, timeout: float = 10.0) -> None:
        self.pool = pool
        self.timeout = timeout
        self.instance_id = ""
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def acquire(self, base: str) -> str:
        for _ in range(8):
            self.instance_id = f"{base}.{uuid.uuid4().hex[:8]}"
            if await self._lock():
                return self.instance_id
        raise DependencyDown("ops_db", "no free instance lock after 8 tries (hash collisions?)")

    async def _lock(self) -> bool:
        conn = None
        try:
            conn = await self.pool.acquire(timeout=self.timeout)
            locked = bool(await conn.fetchval(_LOCK_SQL, self.instance_id, timeout=self.timeout))
        except BaseException as exc:
            if conn is not None:  # a broken or interrupted session: never back into the pool as is
                conn.terminate()
                await self.pool.release(conn)
            err = _db_failure(exc) if isinstance(exc, Exception) else exc
            if err is exc:
                raise
            raise err from exc
        if not locked:
            await self.pool.release(conn)
            return False
        self._conn = conn
        return True

    async def ensure(self) -> None:
        """Check the lock's connection (one `SELECT 1`); re-take the lock if it broke."""
        if self._conn is not None:
            try:
                await self._conn.fetchval("SELECT 1", timeout=self.timeout)
                return
            except Exception:
                await self._drop()
        if not await self._lock():
            raise DependencyDown("ops_db", f"instance lock of {self.instance_id} is held elsewhere")

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self.pool.release(conn, timeout=self.timeout)
            except Exception:
                conn.terminate()

    async def release(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with suppress(Exception):  # the pool's reset (or the closed session) drops it too
                await self._conn.fetchval(_UNLOCK_SQL, self.instance_id, timeout=self.timeout)
        await self._drop()
