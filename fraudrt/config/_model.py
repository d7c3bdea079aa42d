"""The one config interface every component reads: endpoints, credentials, names, paths."""

from __future__ import annotations

from typing import Literal

import msgspec

SubstrateKind = Literal["embedded", "compose", "none"]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class S3Settings(_Section):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = True


class KinesisSettings(_Section):
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    shard_count: int = 1


class PostgresSettings(_Section):
    dsn: str | None = None
    pool_min: int = 1
    pool_max: int = 8


class BucketSettings(_Section):
    oracle: str = "oracle-store"
    platform: str = "fraud-platform"


class StreamSettings(_Section):
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


class Settings(_Section):
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
