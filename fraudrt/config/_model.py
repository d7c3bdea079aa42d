"""The one config interface every component reads: endpoints, credentials, names, paths."""

from __future__ import annotations

from typing import Literal

import msgspec

SubstrateKind = Literal["embedded", "compose", "none"]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class S3Settings(_Section, frozen=True):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = True


class KinesisSettings(_Section, frozen=True):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    shard_count: int = 1


class PostgresSettings(_Section, frozen=True):
    dsn: str | None = None
    pool_min: int = 1
    pool_max: int = 8


class BucketSettings(_Section, frozen=True):
    oracle: str = "oracle-store"
    platform: str = "fraud-platform"


class StreamSettings(_Section, frozen=True):
    """Kinesis stream names (the seed's names; a prefix isolates tests sharing one kinesalite)."""

    prefix: str = ""
    control: str = "sr-control-bus"
    traffic_fraud: str = "fp.bus.traffic.fraud.v1"
    traffic_baseline: str = "fp.bus.traffic.baseline.v1"
    arrival_events: str = "fp.bus.context.arrival_events.v1"
    arrival_entities: str = "fp.bus.context.arrival_entities.v1"
    flow_anchor_fraud: str = "fp.bus.context.flow_anchor.fraud.v1"
    flow_anchor_baseline: str = "fp.bus.context.flow_anchor.baseline.v1"
    rtdl: str = "fp.bus.rtdl.v1"
    case: str = "fp.bus.case.v1"
    audit: str = "fp.bus.audit.v1"

    def all_names(self) -> list[str]:
        """Every stream the seed lists, with the prefix applied."""
        fields = [f for f in self.__struct_fields__ if f != "prefix"]
        return [self.prefix + getattr(self, f) for f in fields]

    def name(self, logical: str) -> str:
        """The physical stream name for a logical field name (`rtdl`) or a seed name."""
        if logical in self.__struct_fields__ and logical != "prefix":
            return self.prefix + str(getattr(self, logical))
        return self.prefix + logical


class IngestionGateSettings(_Section, frozen=True):
    """IG (HTTP). Binds loopback unless configured; keys are read from a file, never logged."""

    host: str = "127.0.0.1"
    port: int = 8081
    # One key per line. Default: <home>/secrets/ig_api_keys (created with a random key on first use).
    api_keys_file: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_events: int = 1000
    receipts_layout: Literal["per_event", "batch"] = "per_event"
    # Concurrent PutRecords calls per stream within one push, split by partition key. kinesalite is
    # one thread and the embedded streams one shard each: extra lanes there only add per-call cost
    # (measured: kinesalite CPU per record 26-32 us with 1 lane, 75-122 us with 4, per-event
    # receipts). Real Kinesis with several shards gains from more.
    publish_lanes: int = 1
    # Back-pressure: a push beyond either limit is answered 429 with Retry-After (WSP waits and
    # retries) instead of queueing for Postgres connections and memory. A push holds a pool
    # connection while its receipts are written, so keep max_pushes_in_flight at most
    # postgres.pool_max - 2 (the instance lock holds one; the probe, heal and lookups need one):
    # then a slow object store shows as 429s, not as pool timeouts read as a database outage. A
    # push's bytes count from its Content-Length (max_body_bytes when it has none); one larger
    # than max_bytes_in_flight still goes through alone.
    max_pushes_in_flight: int = 6
    max_bytes_in_flight: int = 32 * 1024 * 1024


class WorldStreamProducerSettings(_Section, frozen=True):
    """WSP. `ig_url` None means the IG of this profile (`http://<ig.host>:<ig.port>`)."""

    ig_url: str | None = None
    max_events_per_output: int = 0  # 0 = the whole stream view
    speedup: float = 0.0  # 0 = as fast as possible; else event-time compression factor
    push_batch_size: int = 250
    # Event time by which one output may run ahead of the oldest unacknowledged event of any output
    # (each output has one batch in flight, in order). Keep it above ~2 batches of the sparsest
    # output's event time, or unfilled batches are sent early (smaller pushes, lower throughput).
    order_window_seconds: float = 30.0
    mode: Literal["fraud", "baseline"] = "fraud"


class ScenarioRunnerSettings(_Section, frozen=True):
    engine_run_root: str | None = None  # s3://oracle-store/<root>
    scenario_id: str = "baseline_v1"
    mode: Literal["fraud", "baseline"] = "fraud"


class CaseLabelsSettings(_Section, frozen=True):
    """The case + labels plane: escalation criteria, case subject, the investigator API, the label feed."""

    # What becomes a case (CaseTrigger). Not every decision: the actions and scores an investigator
    # should see, actions that failed, and decision chains the audit could not resolve.
    escalate_actions: list[Literal["APPROVE", "STEP_UP", "REVIEW", "DECLINE"]] = msgspec.field(
        default_factory=lambda: ["REVIEW", "DECLINE"])
    # A decision whose score is at least this escalates whatever its action (None: the action alone).
    escalate_score_at_least: float | None = 0.8
    escalate_outcomes: list[Literal["EXECUTED", "FAILED", "DENIED"]] = msgspec.field(
        default_factory=lambda: ["FAILED"])
    escalate_unresolved_audits: bool = True
    # One case per flow (`flow`), or per entity of the flow (`party`, `account`, `instrument`,
    # `device`, `ip`: read from the CSFB binding; a flow whose binding is not there yet is a flow case).
    case_subject: Literal["flow", "party", "account", "instrument", "device", "ip"] = "flow"
    # CM asserts this label (source AUTO, never training data) on each escalated decision's case;
    # empty: none.
    auto_label_value: str = "FRAUD_SUSPECTED"
    # Investigator API (served by case_mgmt). Loopback unless configured; port 0 picks a free one
    # (the port in use is in case_mgmt's health details and `case_mgmt/api.json` of the run).
    api_host: str = "127.0.0.1"
    api_port: int = 8091
    # One key per line. Default: <home>/secrets/case_api_keys (created with a random key on first use).
    api_keys_file: str | None = None
    api_max_body_bytes: int = 64 * 1024
    # The simulated chargeback feed (the only reader of truth in the plane): the share of the run's
    # fraudulent flows that come back as chargebacks and of its legitimate flows confirmed legitimate,
    # and how long after a flow, in event time, its label becomes known. A chargeback also opens an
    # EXTERNAL_SIGNAL case on its flow (`feed_opens_cases`): fraud the decision let through is exactly
    # what an investigator must look at.
    feed_fraud_share: float = 1.0
    feed_legit_share: float = 0.5
    # In the world's clock, which the engine runs at ~60 arrivals/s: the closeout's 200-event window
    # spans ~2 s, and a label must become known inside it for the run to exercise the plane.
    feed_delay_seconds: float = 0.5
    feed_opens_cases: bool = True
    # Where the feed reads truth: empty = the run's SR facts view (the stream view in the object
    # store); else an engine run root (local path or s3://), for runs started without SR.
    feed_truth_engine_run_root: str | None = None


class Settings(_Section, frozen=True):
    """Resolved settings for one profile. Build with `fraudrt.config.load_settings`."""

    profile: str
    substrate: SubstrateKind = "embedded"
    home: str = ".fraudrt"
    runs_root: str = "runs"
    s3: S3Settings = S3Settings()
    kinesis: KinesisSettings = KinesisSettings()
    postgres: PostgresSettings = PostgresSettings()
    buckets: BucketSettings = BucketSettings()
    streams: StreamSettings = StreamSettings()
    ig: IngestionGateSettings = IngestionGateSettings()
    wsp: WorldStreamProducerSettings = WorldStreamProducerSettings()
    sr: ScenarioRunnerSettings = ScenarioRunnerSettings()
    case_labels: CaseLabelsSettings = CaseLabelsSettings()
