"""The substrate: S3, Kinesis and Postgres, started locally (embedded) or reached by endpoint."""

from ._bootstrap import bootstrap, ensure_bucket, ensure_stream, wait_active
from ._clients import kinesis_client, polars_storage_options, s3_client, split_s3_uri
from ._errors import SubstrateError
from ._launcher import down, load_state, state_dir, status, up

__all__ = [
    "SubstrateError",
    "bootstrap",
    "down",
    "ensure_bucket",
    "ensure_stream",
    "kinesis_client",
    "load_state",
    "polars_storage_options",
    "s3_client",
    "split_s3_uri",
    "state_dir",
    "status",
    "up",
    "wait_active",
]
