"""A lean S3 PutObject for IG's receipts: HTTP/1.1 over kept-alive asyncio streams, SigV4 signed here (DESIGN §8).

aiobotocore spends ~1.5 ms of client CPU per PutObject (request building, signing, response
parsing), and aiohttp's client ~0.2 ms; with one receipt object per event that, not the object
store, capped IG. This client writes one pre-formatted request per object on a kept-alive
connection, signs with a cached signing key (two HMACs per request) and reads only the status line,
headers and a Content-Length body. `put_many` runs one worker per connection that PUTs its share of
the objects back to back, so a batch of receipts costs no task, semaphore or timer per object.
It is used when the profile gives a plain-HTTP path-style endpoint and static credentials
(embedded, local_parity); otherwise (AWS: TLS, default credential chain) IG uses aiobotocore.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote, urlsplit

from fraudrt.config import S3Settings

_ALGO: Final = "AWS4-HMAC-SHA256"
_SIGNED: Final = "host;x-amz-content-sha256;x-amz-date"
_MAX_HEADER: Final = 64 * 1024
# Errors after which a kept-alive connection is dropped and the PUT retried once on a fresh one.
_CONN_ERRORS: Final = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


class S3PutError(Exception):
    """A PUT the object store answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"S3 PUT answered {status}: {body[:200]}")
        self.status = status

    @property
    def failure_kind(self) -> str:
        """This error in `fraudrt.runtime.classify`'s terms. A receipt PUT names IG's own object, so
        only a plain 4xx is a request error (ours); a missing bucket (404), refused credentials
        and every 5xx are the store's state."""
        if self.status == 429:
            return "THROTTLED"
        if self.status >= 500 or self.status in (401, 403, 404, 408, 409):
            return "DEPENDENCY"
        return "RECORD"


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class LeanS3Put:
    """`put_many` for plain-HTTP path-style endpoints with static credentials.

    At most `concurrency` connections are open at once, across all callers.
    """

    def __init__(self, settings: S3Settings, *, concurrency: int = 64, timeout: float = 10.0) -> None:
        if not self.supported(settings):
            raise ValueError("LeanS3Put needs an http:// path-style endpoint and static credentials")
        assert settings.endpoint_url and settings.access_key_id and settings.secret_access_key
        parts = urlsplit(settings.endpoint_url)
        self._addr = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._host = parts.netloc
        self._region = settings.region
        self._access_key = settings.access_key_id
        self._secret = settings.secret_access_key.encode()
        self._timeout = timeout
        self._keys: tuple[str, bytes] | None = None
        self._amz_date: tuple[int, str] = (-1, "")
        self._idle: list[_Conn] = []
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)

    @staticmethod
    def supported(settings: S3Settings) -> bool:
        return bool(settings.endpoint_url and settings.endpoint_url.startswith("http://")
                    and settings.access_key_id and settings.secret_access_key and settings.path_style)

    def _signing_key(self, datestamp: str) -> bytes:
        if self._keys is None or self._keys[0] != datestamp:
            k = hmac.new(b"AWS4" + self._secret, datestamp.encode(), hashlib.sha256).digest()
            for part in (self._region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys = (datestamp, k)
        return self._keys[1]

    def _now(self) -> str:
        # x-amz-date has one-second resolution: format it once per second, not once per object.
        second = int(time.time())
        if self._amz_date[0] != second:
            self._amz_date = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
        return self._amz_date[1]

    def _request(self, bucket: str, key: str, body: bytes, content_type: str) -> bytes:
        path = "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")
        amz_date = self._now()
        datestamp = amz_date[:8]
        payload = hashlib.sha256(body).hexdigest()
        canonical = (f"PUT\n{path}\n\nhost:{self._host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n"
                     f"{_SIGNED}\n{payload}")
        scope = f"{datestamp}/{self._region}/s3/aws4_request"
        to_sign = f"{_ALGO}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(datestamp), to_sign.encode(), hashlib.sha256).hexdigest()
        head = (f"PUT {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: {content_type}\r\nx-amz-date: {amz_date}\r\nx-amz-content-sha256: {payload}\r\n"
                f"Authorization: {_ALGO} Credential={self._access_key}/{scope}, SignedHeaders={_SIGNED}, "
                f"Signature={signature}\r\n\r\n")
        return head.encode() + body

    async def _connect(self) -> _Conn:
        if self._idle:
            return self._idle.pop()
        reader, writer = await asyncio.open_connection(*self._addr, limit=_MAX_HEADER)
        return _Conn(reader, writer)

    @staticmethod
    async def _exchange(conn: _Conn, request: bytes) -> tuple[int, bytes, bool]:
        conn.writer.write(request)
        await conn.writer.drain()
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep, chunked = 0, True, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            body = bytearray()
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await conn.reader.readuntil(b"\r\n")
                    break
                body += await conn.reader.readexactly(size + 2)
            return status, bytes(body), keep
        return status, await conn.reader.readexactly(length) if length else b"", keep

    async def _put_on(self, conn: _Conn | None, request: bytes) -> tuple[_Conn | None, Exception | None]:
        """PUT one object: (the connection to keep using or None, the error or None)."""
        for attempt in (0, 1):
            try:
                if conn is None:
                    conn = await self._connect()
                status, answer, keep = await self._exchange(conn, request)
            except _CONN_ERRORS as exc:
                if conn is not None:
                    conn.close()
                conn = None
                # A kept-alive connection the server already closed: one retry on a fresh one
                # (PUT of the same bytes is idempotent).
                if attempt == 0:
                    continue
                return None, exc
            except BaseException:  # cancelled (the caller's timeout) mid-exchange: the stream is unusable
                if conn is not None:
                    conn.close()
                raise
            if not keep:
                conn.close()
                conn = None
            return conn, S3PutError(status, answer.decode("utf-8", "replace")) if status >= 300 else None
        raise AssertionError("unreachable")

    async def put_many(self, bucket: str, objects: Sequence[tuple[str, bytes]],
                       content_type: str = "application/json") -> list[BaseException | None]:
        """PUT every (key, body); per object None or the error it ended with, in input order.

        Each object has `timeout` seconds from when its request is sent; a cancelled call closes its
        connections (a half-read response must not be reused).
        """
        errors: list[BaseException | None] = [None] * len(objects)
        if not objects:
            return errors
        requests = [self._request(bucket, key, body, content_type) for key, body in objects]
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            async with self._slots:
                conn: _Conn | None = None
                while next_index < len(requests):
                    i = next_index
                    next_index += 1
                    try:
                        async with asyncio.timeout(self._timeout):
                            conn, errors[i] = await self._put_on(conn, requests[i])
                    except TimeoutError as exc:
                        errors[i] = exc
                        conn = None  # closed by _put_on when the timeout cancelled it
                if conn is not None:
                    self._idle.append(conn)

        workers = min(self._concurrency, len(requests))
        if workers == 1:
            await worker()
        else:
            async with asyncio.TaskGroup() as tg:
                for _ in range(workers):
                    tg.create_task(worker())
        return errors

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def __aenter__(self) -> LeanS3Put:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
