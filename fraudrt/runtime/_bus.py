"""The Kinesis data plane behind one small interface: PutRecords, GetShardIterator, GetRecords, ListShards.

The implementation is a lean aiohttp + msgspec client signed with botocore's SigV4 signer: botocore's
response parser costs ~17 µs per record read and ~1.5 ms per call (reference/client_overhead.md), which
on a pack that reads every record several times is most of the client's CPU. Control-plane calls
(create/describe) stay on aiobotocore (`fraudrt.substrate.kinesis_client`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import aiohttp
import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import get_session as get_botocore_session

from fraudrt.config import KinesisSettings

from ._errors import BusError, ExpiredIteratorError, StreamNotFoundError, ThrottledError

MAX_PUT_RECORDS = 500
MAX_GET_RECORDS = 10_000


# PutEntry and PutResult are also the wire shapes of a PutRecords record and its result (renamed
# fields; bytes are base64 on the wire, which msgspec handles): no per-record copy either way.
class PutEntry(msgspec.Struct, frozen=True, rename={"data": "Data", "partition_key": "PartitionKey"}):
    data: bytes
    partition_key: str


class PutResult(msgspec.Struct, frozen=True, rename={"shard_id": "ShardId", "sequence_number": "SequenceNumber",
                                                      "error_code": "ErrorCode", "error_message": "ErrorMessage"}):
    shard_id: str | None = None
    sequence_number: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.sequence_number is not None


class BusRecord(msgspec.Struct, frozen=True):
    stream: str
    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival_ts: float


class GetResult(msgspec.Struct, frozen=True):
    records: list[BusRecord]
    next_iterator: str | None
    millis_behind: int


# ---- wire shapes (Kinesis JSON 1.1; bytes fields are base64 on the wire, which msgspec handles)


class _PutReq(msgspec.Struct):
    StreamName: str
    Records: Sequence[PutEntry]


class _PutResp(msgspec.Struct):
    Records: list[PutResult]
    FailedRecordCount: int = 0


class _GetRespRecord(msgspec.Struct):
    Data: bytes
    PartitionKey: str
    SequenceNumber: str
    ApproximateArrivalTimestamp: float = 0.0


class _GetResp(msgspec.Struct):
    Records: list[_GetRespRecord]
    NextShardIterator: str | None = None
    MillisBehindLatest: int = 0


class _IterResp(msgspec.Struct):
    ShardIterator: str


class _SeqRange(msgspec.Struct):
    StartingSequenceNumber: str = ""
    EndingSequenceNumber: str | None = None


class _Shard(msgspec.Struct):
    ShardId: str
    ParentShardId: str | None = None
    AdjacentParentShardId: str | None = None
    SequenceNumberRange: _SeqRange | None = None


class ShardInfo(msgspec.Struct, frozen=True):
    """A shard and its lineage: after a split or merge, read a child only once its parents are done."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


class _ListShardsResp(msgspec.Struct):
    Shards: list[_Shard]
    NextToken: str | None = None


class _ErrorResp(msgspec.Struct):
    type_: str = msgspec.field(default="", name="__type")
    message: str = ""
    Message: str = ""


_THROTTLE = {"ProvisionedThroughputExceededException", "LimitExceededException", "KMSThrottlingException",
             "ThrottlingException"}
_EXPIRED = {"ExpiredIteratorException"}
_NOT_FOUND = {"ResourceNotFoundException"}

_enc = msgspec.json.Encoder()
_dec_put = msgspec.json.Decoder(_PutResp)
_dec_get = msgspec.json.Decoder(_GetResp)
_dec_iter = msgspec.json.Decoder(_IterResp)
_dec_list = msgspec.json.Decoder(_ListShardsResp)
_dec_err = msgspec.json.Decoder(_ErrorResp)

IteratorType = Literal["TRIM_HORIZON", "AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER"]


class KinesisBus:
    """One per process; share it between tasks. Use as an async context manager."""

    def __init__(self, settings: KinesisSettings, *, timeout: float = 30.0) -> None:
        self._region = settings.region
        self._endpoint = settings.endpoint_url or f"https://kinesis.{settings.region}.amazonaws.com"
        if settings.access_key_id and settings.secret_access_key:
            self._creds: Credentials | None = Credentials(settings.access_key_id, settings.secret_access_key)
        else:
            self._creds = get_botocore_session().get_credentials()
        if self._creds is None:
            raise BusError("NoCredentials", "no AWS credentials found for Kinesis", retriable=False)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KinesisBus:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _signed_headers(self, target: str, body: bytes) -> dict[str, str]:
        assert self._creds is not None
        frozen: ReadOnlyCredentials = self._creds.get_frozen_credentials()
        request = AWSRequest(method="POST", url=self._endpoint, data=body, headers={
            "X-Amz-Target": f"Kinesis_20131202.{target}",
            "Content-Type": "application/x-amz-json-1.1",
        })
        SigV4Auth(frozen, "kinesis", self._region).add_auth(request)
        return dict(request.headers.items())

    async def _call(self, target: str, body: bytes) -> bytes:
        if self._session is None:
            raise RuntimeError("KinesisBus used outside `async with`")
        headers = self._signed_headers(target, body)
        try:
            async with self._session.post(self._endpoint, data=body, headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BusError("ConnectionError", f"{target}: {exc!r}", retriable=True, backoff=0.5) from exc
        if status == 200:
            return payload
        try:
            err = _dec_err.decode(payload)
            code = err.type_.rsplit("#", 1)[-1] or f"HTTP{status}"
            message = err.message or err.Message
        except msgspec.DecodeError:
            code, message = f"HTTP{status}", payload[:200].decode("utf-8", "replace")
        if code in _THROTTLE:
            raise ThrottledError(code, message, status)
        if code in _EXPIRED or (code == "InvalidArgumentException" and "terator" in message):
            raise ExpiredIteratorError(code, message, status)
        if code in _NOT_FOUND:
            raise StreamNotFoundError(code, message, status)
        raise BusError(code, message, retriable=status >= 500, status=status)

    async def put_records(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]:
        """One PutRecords call (<= 500 entries); per-record results in order, failures not raised."""
        if len(entries) > MAX_PUT_RECORDS:
            raise ValueError(f"PutRecords takes at most {MAX_PUT_RECORDS} records, got {len(entries)}")
        body = _enc.encode(_PutReq(stream, entries))
        return _dec_put.decode(await self._call("PutRecords", body)).Records

    async def get_shard_iterator(self, stream: str, shard_id: str, *,
                                 after_sequence: str | None = None,
                                 at_sequence: str | None = None) -> str:
        """TRIM_HORIZON unless a sequence number is given. LATEST is deliberately not offered."""
        req: dict[str, str] = {"StreamName": stream, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"}
        if after_sequence is not None:
            req.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after_sequence)
        elif at_sequence is not None:
            req.update(ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=at_sequence)
        return _dec_iter.decode(await self._call("GetShardIterator", _enc.encode(req))).ShardIterator

    async def get_records(self, stream: str, shard_id: str, iterator: str,
                          limit: int = MAX_GET_RECORDS) -> GetResult:
        body = _enc.encode({"ShardIterator": iterator, "Limit": min(limit, MAX_GET_RECORDS)})
        resp = _dec_get.decode(await self._call("GetRecords", body))
        records = [BusRecord(stream, shard_id, r.SequenceNumber, r.PartitionKey, r.Data,
                             r.ApproximateArrivalTimestamp) for r in resp.Records]
        return GetResult(records, resp.NextShardIterator, resp.MillisBehindLatest)

    async def list_shards(self, stream: str) -> list[str]:
        return [s.shard_id for s in await self.describe_shards(stream)]

    async def describe_shards(self, stream: str) -> list[ShardInfo]:
        """Every shard of the stream (open and closed, within retention) with its parents."""
        shards: list[ShardInfo] = []
        req: dict[str, str] = {"StreamName": stream}
        while True:
            resp = _dec_list.decode(await self._call("ListShards", _enc.encode(req)))
            for s in resp.Shards:
                parents = tuple(p for p in (s.ParentShardId, s.AdjacentParentShardId) if p)
                closed = bool(s.SequenceNumberRange and s.SequenceNumberRange.EndingSequenceNumber)
                shards.append(ShardInfo(s.ShardId, parents, closed))
            if not resp.NextToken:
                return shards
            req = {"NextToken": resp.NextToken}


def shard_number(shard_id: str) -> int:
    """`shardId-000000000003` -> 3 (the receipts' `eb_ref.partition`)."""
    return int(shard_id.rsplit("-", 1)[-1])


def seq_key(sequence_number: str) -> int:
    """Sequence numbers are opaque strings; within one shard they order as integers."""
    return int(sequence_number)
