"""A thin Kafka-protocol relay in front of the embedded broker, for librdkafka clients.

Tansu answers ApiVersions v3 with the optional feature tags (SupportedFeatures,
FinalizedFeaturesEpoch, FinalizedFeatures, ZkMigrationReady) that librdkafka 2.0.x, the
version behind Debian's kcat, misparses ("ApiVersionRequest failed: Local: Read underflow"),
so kcat could not talk to the embedded broker at all. The relay forwards every byte unchanged
except the top-level tagged fields of ApiVersions (v3+) responses, which it drops; those tags
are optional by the protocol, and no client needs them to produce or consume.

The embedded broker listens on a private port and advertises the relay's address, so every
connection (bootstrap and per-broker) goes through the relay. Run as a child process:

    python -m streams.kafka_compat --listen 127.0.0.1:9092 --upstream 127.0.0.1:40123
"""

from __future__ import annotations

import argparse
import asyncio
import struct

API_VERSIONS = 18


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def skip_tagged_fields(buf: bytes, pos: int) -> int:
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
    return pos


def strip_api_versions_tags(payload: bytes) -> bytes:
    """An ApiVersions v3+ response payload (correlation id first) without its top-level
    tagged fields. Anything unexpected is returned unchanged."""
    try:
        pos = 4 + 2                       # correlation id, error code
        n, pos = read_uvarint(payload, pos)
        for _ in range(max(n - 1, 0)):    # compact array: length + 1
            pos = skip_tagged_fields(payload, pos + 6)  # api key, min, max version
        pos += 4                          # throttle time
        if pos >= len(payload):
            return payload
        skip_tagged_fields(payload, pos)  # validate before cutting
        return payload[:pos] + b"\x00"
    except IndexError:
        return payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    (n,) = struct.unpack(">i", size)
    return size + await reader.readexactly(n)


async def _pump_requests(reader, writer, pending: dict[int, tuple[int, int]]) -> None:
    while True:
        frame = await _read_frame(reader)
        if len(frame) >= 12:
            api_key, api_version, corr = struct.unpack(">hhi", frame[4:12])
            if api_key == API_VERSIONS:
                pending[corr] = (api_key, api_version)
        writer.write(frame)
        await writer.drain()


async def _pump_responses(reader, writer, pending: dict[int, tuple[int, int]]) -> None:
    while True:
        frame = await _read_frame(reader)
        if pending and len(frame) >= 8:
            (corr,) = struct.unpack(">i", frame[4:8])
            req = pending.pop(corr, None)
            if req is not None and req[1] >= 3:
                payload = strip_api_versions_tags(frame[4:])
                frame = struct.pack(">i", len(payload)) + payload
        writer.write(frame)
        await writer.drain()


async def _relay(client_r, client_w, upstream: tuple[str, int]) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*upstream)
    except OSError:
        client_w.close()
        return
    pending: dict[int, tuple[int, int]] = {}
    tasks = [asyncio.ensure_future(_pump_requests(client_r, server_w, pending)),
             asyncio.ensure_future(_pump_responses(server_r, client_w, pending))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for w in (client_w, server_w):
            try:
                w.close()
            except Exception:
                pass


async def serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    server = await asyncio.start_server(lambda r, w: _relay(r, w, upstream), *listen)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT clients connect to")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the broker")
    args = p.parse_args(argv)

    def hp(s: str) -> tuple[str, int]:
        host, _, port = s.rpartition(":")
        return host, int(port)

    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        asyncio.run(serve(hp(args.listen), hp(args.upstream)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
