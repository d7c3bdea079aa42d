-- Identity/Entity Graph (IEG): one row per flow anchor (its entities and graph features), the typed
-- edges with first/last seen and counts, the entities (a view over the edges) and the event-time
-- watermark applied per shard. Every row is scoped by platform_run_id; ids are the engine's own
-- (unsigned 64-bit ids stored as the int64 with the same bits; see _definition.py).

-- The observation log and the reader's table: a flow's features are computed once, as of its own
-- event time, and never change. NULL features: the flow waits for another shard's earlier records.
CREATE TABLE IF NOT EXISTS ieg_flows (
    platform_run_id           TEXT NOT NULL,
    flow_id                   BIGINT NOT NULL,
    event_id                  TEXT NOT NULL,
    ts_utc                    TIMESTAMPTZ NOT NULL,
    merchant_id               BIGINT NOT NULL,
    arrival_seq               BIGINT NOT NULL,
    party_id                  BIGINT NOT NULL,
    account_id                BIGINT NOT NULL,
    instrument_id             BIGINT NOT NULL,
    device_id                 BIGINT NOT NULL,
    ip_id                     BIGINT NOT NULL,
    device_party_count_24h    INT,
    ip_party_count_24h        INT,
    device_new_for_party      BOOLEAN,
    ip_new_for_party          BOOLEAN,
    instrument_account_count  INT,
    neighbourhood_2hop        INT,
    PRIMARY KEY (platform_run_id, flow_id)
);
-- Only waiting flows enter this index (none at all on a one-shard stream): a restart finds them here.
CREATE INDEX IF NOT EXISTS ieg_flows_waiting ON ieg_flows (platform_run_id, ts_utc) WHERE neighbourhood_2hop IS NULL;

-- Typed edges: src -> dst as the edge type names them (party_account: party -> account, ...).
-- No index covers a column an observation changes, so the upsert of a known edge is a HOT update.
CREATE TABLE IF NOT EXISTS ieg_edges (
    platform_run_id  TEXT NOT NULL,
    edge_type        TEXT NOT NULL,
    src_id           BIGINT NOT NULL,
    dst_id           BIGINT NOT NULL,
    first_seen       TIMESTAMPTZ NOT NULL,
    last_seen        TIMESTAMPTZ NOT NULL,
    seen_count       BIGINT NOT NULL,
    PRIMARY KEY (platform_run_id, edge_type, src_id, dst_id)
) WITH (fillfactor = 80);

-- Entities: every observation holds exactly one edge of each type, so an entity's first/last seen
-- and count are those of the edges it is the source (party) or destination (the rest) of. A view
-- rather than a second table written per observation; nothing on a hot path reads it.
CREATE OR REPLACE VIEW ieg_entities AS
SELECT platform_run_id, entity_type, entity_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
       sum(seen_count)::bigint AS seen_count
  FROM (SELECT platform_run_id, 'party' AS entity_type, src_id AS entity_id, first_seen, last_seen, seen_count
          FROM ieg_edges WHERE edge_type = 'party_account'
        UNION ALL
        SELECT platform_run_id, CASE edge_type WHEN 'party_account' THEN 'account'
                                               WHEN 'account_instrument' THEN 'instrument'
                                               WHEN 'party_device' THEN 'device'
                                               WHEN 'party_ip' THEN 'ip'
                                               ELSE 'merchant' END,
               dst_id, first_seen, last_seen, seen_count
          FROM ieg_edges
         WHERE edge_type IN ('party_account', 'account_instrument', 'party_device', 'party_ip',
                             'instrument_merchant')) AS e
 GROUP BY platform_run_id, entity_type, entity_id;

-- The event time applied per (stream, shard): a flow is answerable once every shard has passed it.
-- late_total: records that came in below their shard's watermark (the producer's order was broken).
CREATE TABLE IF NOT EXISTS ieg_watermarks (
    platform_run_id  TEXT NOT NULL,
    stream           TEXT NOT NULL,
    shard_id         TEXT NOT NULL,
    watermark_ts     TIMESTAMPTZ NOT NULL,
    late_total       BIGINT NOT NULL DEFAULT 0,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_run_id, stream, shard_id)
);
