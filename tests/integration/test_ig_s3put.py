"""IG's lean S3 PUT client against the embedded SeaweedFS: bytes land intact, errors stay per object."""

from __future__ import annotations

import asyncio
import socket
import uuid

import msgspec

from fraudrt.config import Settings
from fraudrt.control_ingress.ingestion_gate._s3put import LeanS3Put, S3PutError
from fraudrt.substrate import s3_client


async def _get(settings: Settings, key: str) -> bytes:
    async with s3_client(settings.s3) as s3:
        obj = await s3.get_object(Bucket=settings.buckets.platform, Key=key)
        async with obj["Body"] as body:
            data: bytes = await body.read()
            return data


async def test_put_many_writes_every_object_with_its_own_bytes(settings: Settings) -> None:
    prefix = f"t-lean/{uuid.uuid4().hex}"
    # Keys that need percent-encoding must sign and land under the same name.
    objects = [(f"{prefix}/obj {i} é+~.json", msgspec.json.encode({"i": i, "pad": "x" * (i % 7) * 300}))
               for i in range(300)]
    async with LeanS3Put(settings.s3, concurrency=8) as lean:
        errors = await lean.put_many(settings.buckets.platform, objects)
        assert errors == [None] * len(objects)
        for i in (0, 1, 150, 299):
            assert await _get(settings, objects[i][0]) == objects[i][1]
        # The kept-alive connections are reused by the next call, not reopened.
        assert 1 <= len(lean._idle) <= 8


async def test_an_error_answer_fails_only_its_objects(settings: Settings) -> None:
    async with LeanS3Put(settings.s3, concurrency=4) as lean:
        errors = await lean.put_many("Not_A_Bucket", [(f"k{i}", b"{}") for i in range(5)])
        assert all(isinstance(e, S3PutError) and e.status == 400 for e in errors), errors
        # The connections that carried the 400s still work.
        assert await lean.put_many(settings.buckets.platform, [(f"t-lean/{uuid.uuid4().hex}", b"{}")]) == [None]


async def test_wrong_credentials_are_a_403_per_object(settings: Settings) -> None:
    wrong = msgspec.structs.replace(settings.s3, secret_access_key="not-the-secret")
    async with LeanS3Put(wrong, concurrency=2) as lean:
        errors = await lean.put_many(settings.buckets.platform, [("t-lean/x", b"1"), ("t-lean/y", b"2")])
    assert [getattr(e, "status", None) for e in errors] == [403, 403]


async def test_a_connection_the_server_dropped_is_retried_on_a_fresh_one(settings: Settings) -> None:
    key = f"t-lean/{uuid.uuid4().hex}"
    async with LeanS3Put(settings.s3, concurrency=2) as lean:
        assert await lean.put_many(settings.buckets.platform, [(key + "/a", b"1"), (key + "/b", b"2")]) == [None] * 2
        for conn in lean._idle:  # as if the server had closed its idle keep-alives
            sock = conn.writer.get_extra_info("socket")
            sock.shutdown(socket.SHUT_RDWR)
        assert await lean.put_many(settings.buckets.platform, [(key + "/c", b"3"), (key + "/d", b"4")]) == [None] * 2
    assert await _get(settings, key + "/d") == b"4"


async def test_a_server_that_never_answers_times_out_per_object(settings: Settings) -> None:
    received: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s3 = msgspec.structs.replace(settings.s3, endpoint_url=f"http://127.0.0.1:{port}")
    try:
        async with LeanS3Put(s3, concurrency=2, timeout=0.3) as lean:
            errors = await asyncio.wait_for(lean.put_many("b", [("k1", b"x"), ("k2", b"y"), ("k3", b"z")]), 10)
            assert all(isinstance(e, TimeoutError) for e in errors), errors
            assert lean._idle == []  # a half-answered connection is never reused
    finally:
        server.close()
    assert received and received[0].startswith(b"PUT /b/k")
