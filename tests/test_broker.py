import asyncio
import socket
import struct

import pytest

from kernel.broker import BrokerError, EmbeddedBroker, ensure_topics, split_host_port
from kernel.kafka_relay import strip_api_versions_tags
from kernel.settings import load_settings

# An ApiVersions v3 response as Tansu sends it (2 api keys shown), ending in the four feature
# tags that librdkafka 2.0.x misparses.
TAIL_TAGS = bytes.fromhex("040001010108ffffffffffffffff020101030100")
RESPONSE = (struct.pack(">ih", 1, 0) + bytes([3]) + struct.pack(">hhh", 0, 0, 9) + b"\x00"
            + struct.pack(">hhh", 18, 0, 3) + b"\x00" + struct.pack(">i", 0) + TAIL_TAGS)


def test_relay_drops_only_the_top_level_tags():
    out = strip_api_versions_tags(RESPONSE)
    assert out == RESPONSE[: -len(TAIL_TAGS)] + b"\x00"
    assert strip_api_versions_tags(out) == out
    assert strip_api_versions_tags(RESPONSE[:9]) == RESPONSE[:9]  # truncated: untouched


def test_split_host_port():
    assert split_host_port("127.0.0.1:9092") == ("127.0.0.1", 9092)
    with pytest.raises(BrokerError, match="HOST:PORT"):
        split_host_port("localhost")


def test_port_in_use_names_the_fix():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        listen = f"127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(BrokerError, match="already in use.*FLYWHEEL_KAFKA_BOOTSTRAP"):
            EmbeddedBroker(listen).start()


def test_topics_are_created_once(broker):
    from dataclasses import replace
    s = load_settings({})
    kafka = replace(s.kafka, bootstrap=broker.bootstrap)
    created = asyncio.run(ensure_topics(kafka))
    assert "teacher.logs" in created and "dead.letters" in created
    assert asyncio.run(ensure_topics(kafka)) == []
