"""flywheel's Faust transport: how it is found, configured and refused (no broker needed)."""

from __future__ import annotations

import pytest
from faust.transport import by_url

from streams.worker import transport as t


def test_the_flywheel_scheme_resolves_to_the_transport_and_its_consumer():
    cls = by_url("flywheel://127.0.0.1:9092")
    assert cls is t.Transport
    assert cls.Consumer is t.Consumer


def test_broker_urls_carry_the_options_in_the_first_url_only():
    urls = t.broker_urls(["a:9092", " b:9093 ", ""], fetch_max_wait_ms=20, poll_timeout_ms=40)
    assert urls == "flywheel://a:9092?fetch_max_wait_ms=20&poll_timeout_ms=40;flywheel://b:9093"
    with pytest.raises(ValueError, match="no Kafka bootstrap server"):
        t.broker_urls([" "])


def test_an_app_on_the_transport_reads_its_options_and_leaves_the_monitor_out():
    app = t.App("x", broker=t.broker_urls(["127.0.0.1:1", "127.0.0.1:2"], fetch_max_wait_ms=25,
                                          poll_timeout_ms=60))
    transport = app.transport
    assert isinstance(transport, t.Transport)
    assert (transport.fetch_max_wait_ms, transport.poll_timeout_ms) == (25, 60)
    assert [u.port for u in transport.url] == [1, 2]
    app.on_init_dependencies()
    assert app.monitor not in set(app.sensors)


def test_defaults_and_bad_options():
    app = t.App("x", broker="flywheel://127.0.0.1:1")
    assert (app.transport.fetch_max_wait_ms, app.transport.poll_timeout_ms) == (
        t.DEFAULT_FETCH_MAX_WAIT_MS, t.DEFAULT_POLL_TIMEOUT_MS)
    bad = t.App("y", broker="flywheel://127.0.0.1:1?poll_timeout_ms=soon")
    with pytest.raises(ValueError, match="poll_timeout_ms='soon' is not a whole number"):
        bad.transport


def test_an_untested_faust_version_is_refused_naming_the_fix():
    t.check_faust_version()  # the installed one is tested
    with pytest.raises(t.UntestedFaustVersion) as exc:
        t.check_faust_version("0.16.0")
    msg = str(exc.value)
    assert "faust-streaming 0.16.0 is installed" in msg
    assert "pip install 'faust-streaming==0.15.3'" in msg
    assert "TESTED_FAUST_VERSIONS" in msg


def test_describe_assignment_names_topics_and_partitions():
    from collections import namedtuple

    from streams.worker.transport import describe_assignment

    TP = namedtuple("TP", "topic partition")
    assert describe_assignment({TP("teacher.logs", 2), TP("teacher.logs", 0), TP("live.requests", 1)}) \
        == "live.requests[1] teacher.logs[0,2]"
    assert describe_assignment(set()) == "nothing"
