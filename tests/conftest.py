"""Shared fixtures: a real embedded broker (Tansu) on a free port, a fresh data dir, tasks."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from kernel.broker import EmbeddedBroker, ensure_topics
from kernel.settings import load_settings
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl

TX_TASK = """
name = "transactions"
labels = ["groceries", "transport", "dining", "rent", "utilities"]
min_confidence = 0.6
near_duplicate_threshold = 0.8
slice = "meta.country"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    """A fresh real embedded broker per test, with the default disk storage (it starts in ~0.3 s)."""
    listen = f"127.0.0.1:{free_port()}"
    with EmbeddedBroker(listen, log_path=tmp_path / "broker.log", storage=tmp_path / "broker") as b:
        yield b


@pytest.fixture
def memory_broker(tmp_path):
    """The embedded broker with memory storage (FLYWHEEL_BROKER_STORAGE=memory)."""
    listen = f"127.0.0.1:{free_port()}"
    with EmbeddedBroker(listen, log_path=tmp_path / "memory-broker.log") as b:
        yield b


@pytest.fixture
def store(tmp_path):
    """A fresh embedded ClickHouse store with the DDL applied, owned by this test."""
    w = open_warehouse(load_settings({}, data_dir=tmp_path / "store"))
    apply_ddl(w)
    yield w
    w.close()


@pytest.fixture
def tasks_dir(tmp_path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "transactions.toml").write_text(TX_TASK)
    return d


@pytest.fixture
def settings(broker, tmp_path, tasks_dir, request):
    """Settings pointing at this test's broker (topics created) and a fresh data dir."""
    s = load_settings({}, data_dir=tmp_path / "data", tasks_dir=tasks_dir)
    from dataclasses import replace
    kafka = replace(s.kafka, bootstrap=broker.bootstrap)
    s = replace(s, kafka=kafka)
    asyncio.run(ensure_topics(s.kafka))
    return s
