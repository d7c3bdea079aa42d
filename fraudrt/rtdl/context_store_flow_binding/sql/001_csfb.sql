-- Context Store / Flow Binding (CSFB). Only this package reads or writes these tables; other
-- components go through `fraudrt.rtdl.context_store_flow_binding.reader`.
--
-- merchant_id is the engine's UInt64, stored as the int64 with the same 64 bits (values >= 2^63
-- become negative), so keys stay plain BIGINTs; the reader maps them back.

-- One row per arrival (merchant_id, arrival_seq) of a run: the arrival event's context and the
-- arrival's entities, each part written once (NULL until its record is applied, never overwritten)
-- with the event id and content hash of the record it came from: another copy of that event is a
-- duplicate (same hash) or a mismatch (other hash), another event for the part a conflict.
-- Room is left on each page so the second part's update stays on the page (a HOT update).
CREATE TABLE IF NOT EXISTS csfb_join_frames (
    platform_run_id      TEXT NOT NULL,
    merchant_id          BIGINT NOT NULL,
    arrival_seq          BIGINT NOT NULL,
    -- arrival_events_5B
    arrival_event_id     TEXT,
    arrival_hash         TEXT,
    arrival_ts           TIMESTAMPTZ,
    is_virtual           BOOLEAN,
    channel_group        TEXT,
    zone_representation  TEXT,
    tzid_primary         TEXT,
    tzid_operational     TEXT,
    -- s1_arrival_entities_6B
    entities_event_id    TEXT,
    entities_hash        TEXT,
    party_id             BIGINT,
    account_id           BIGINT,
    instrument_id        BIGINT,
    device_id            BIGINT,
    ip_id                BIGINT,
    session_id           BIGINT,
    PRIMARY KEY (platform_run_id, merchant_id, arrival_seq)
) WITH (fillfactor = 70);

-- One row per flow anchor: flow_id -> join frame key, with the anchor's own fields (truth-free).
-- Several flows may share one join frame key (no uniqueness on it). Insert-only.
CREATE TABLE IF NOT EXISTS csfb_flow_bindings (
    platform_run_id      TEXT NOT NULL,
    flow_id              BIGINT NOT NULL,
    merchant_id          BIGINT NOT NULL,
    arrival_seq          BIGINT NOT NULL,
    anchor_event_id      TEXT NOT NULL,
    anchor_hash          TEXT NOT NULL,
    ts                   TIMESTAMPTZ NOT NULL,
    amount               DOUBLE PRECISION NOT NULL,
    party_id             BIGINT NOT NULL,
    account_id           BIGINT NOT NULL,
    instrument_id        BIGINT NOT NULL,
    device_id            BIGINT NOT NULL,
    ip_id                BIGINT NOT NULL,
    PRIMARY KEY (platform_run_id, flow_id)
);
-- The flows bound to a frame (the frame reader's flow_ids).
CREATE INDEX IF NOT EXISTS csfb_flow_bindings_by_frame ON csfb_flow_bindings (platform_run_id, merchant_id, arrival_seq);

-- The bindings whose frame is not complete yet: a row while a binding waits, deleted by the batch
-- that completes its frame (a late join). Small (what waits now), so finding the waiting bindings
-- of a frame never searches the run's bindings, and the actor reloads its waiting set from here.
CREATE TABLE IF NOT EXISTS csfb_waiting (
    platform_run_id      TEXT NOT NULL,
    merchant_id          BIGINT NOT NULL,
    arrival_seq          BIGINT NOT NULL,
    flow_id              BIGINT NOT NULL,
    bound_at             TIMESTAMPTZ NOT NULL DEFAULT now(),  -- wall clock: health's join-wait age
    PRIMARY KEY (platform_run_id, merchant_id, arrival_seq, flow_id)
);

-- One row per completed binding, in completion order: what `completed_since` reads. `hit`: the
-- frame was complete when the anchor was applied. Bookkeeping of how the run was applied (the
-- order differs with the interleaving), never part of a binding's answer. Insert-only.
CREATE TABLE IF NOT EXISTS csfb_completions (
    platform_run_id      TEXT NOT NULL,
    completion_seq       BIGINT NOT NULL,
    flow_id              BIGINT NOT NULL,
    hit                  BOOLEAN NOT NULL,
    completed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, completion_seq)
);

-- Completion cursor values. One CSFB writer per run commits its batches in order, so within a run
-- a later commit always carries larger values and `completion_seq > cursor` misses nothing.
CREATE SEQUENCE IF NOT EXISTS csfb_completion_seq;

-- Per-run counters and watermarks, updated in each batch's transaction: the actor loads them at
-- start instead of counting the run's rows.
CREATE TABLE IF NOT EXISTS csfb_run_stats (
    platform_run_id      TEXT PRIMARY KEY,
    bindings_total       BIGINT NOT NULL DEFAULT 0,
    join_hits            BIGINT NOT NULL DEFAULT 0,
    late_joins           BIGINT NOT NULL DEFAULT 0,
    frames_total         BIGINT NOT NULL DEFAULT 0,
    frames_complete      BIGINT NOT NULL DEFAULT 0,
    rejected_total       BIGINT NOT NULL DEFAULT 0,
    mismatches_total     BIGINT NOT NULL DEFAULT 0,
    duplicates_total     BIGINT NOT NULL DEFAULT 0,
    wm_arrival_events    TIMESTAMPTZ,
    wm_arrival_entities  TIMESTAMPTZ,
    wm_flow_anchor       TIMESTAMPTZ,
    completion_cursor    BIGINT NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
