"""flywheel's Faust transport: the aiokafka driver with a batched drain and a short fetch wait.

Faust resolves a transport from the scheme of the broker URL (``kafka://`` -> its aiokafka
driver) through the ``faust.transport.drivers.TRANSPORTS`` registry, the same registry that
the ``faust.transports`` entry point feeds. This module registers the scheme ``flywheel://``
for :class:`Transport`, a subclass of that driver, and :func:`broker_urls` builds the URLs.
The options travel in the first URL's query, e.g. ``flywheel://h:9092?fetch_max_wait_ms=50``.

What it changes, and why (profiled before it was written: faust-streaming 0.15.3, Python
3.11, uvloop, 2 shared cores, a decode-only agent, py-spy at 200 Hz):

* ``Consumer._drain_messages`` races every message's delivery against the flow-control event
  (``wait_first(callback(msg), suspend_flow.wait())``: 4 tasks, ``asyncio.wait``, 3 cancels per
  message), about 40% of the ~85 us that a stock agent spends per event. :class:`Consumer`
  keeps the race, one per fetched batch: a rebalance still interrupts delivery at once.
* With one race per batch, Faust's 1 s poll timeout is wrong: once the stream buffer fills,
  the busy partition is paused and ``getmany`` waits the whole second on the idle ones
  (measured: 0.46x stock). The poll timeout here is 50 ms.
* The aiokafka driver builds its consumer with ``fetch_max_wait_ms=1500``, not a Faust setting.
  Faust co-subscribes its idle ``__assignor-__leader`` topic and aiokafka sends one fetch per
  broker at a time, so fetches for a busy topic wait behind the broker holding one for the idle
  topic (decode-only 5.5k -> 14k events/s with 50 ms, plain aiokafka reproduces it).
* :class:`App` leaves Faust's Monitor sensor out of the per-event sensor calls (about 6 us per
  event; flywheel reads none of its statistics). The drain keeps the one field Faust itself
  reads from it (when each partition last delivered, for its slow-processing warnings).

Measured with bench/curate_bench.py (decode-only agent, 60k events, 3 interleaved runs per
mode, two runs on a shared 2-vCPU machine): against stock faust-streaming, 2.1x and 3.0x
events/s (median), 2.2x and 2.3x less CPU per event (~62 -> ~28 us, raw aiokafka ~2.6 us).

The drain replaces a private method, so :func:`check_faust_version` refuses any
faust-streaming other than the one it was written and tested against.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from time import monotonic
from typing import Any, Iterable
from urllib.parse import urlencode

import faust
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as _aiokafka
from yarl import URL

SCHEME = "flywheel"
#: faust-streaming versions whose ``Consumer._drain_messages`` this module's drain was checked
#: against line by line, and whose behaviour tests/test_rebalance.py and the crash test cover.
TESTED_FAUST_VERSIONS = ("0.15.3",)
DEFAULT_FETCH_MAX_WAIT_MS = 50
DEFAULT_POLL_TIMEOUT_MS = 50


class UntestedFaustVersion(RuntimeError):
    pass


def check_faust_version(version: str | None = None) -> None:
    """Refuse to start on a faust-streaming this transport was not tested with."""
    version = version or importlib.metadata.version("faust-streaming")
    if version not in TESTED_FAUST_VERSIONS:
        raise UntestedFaustVersion(
            f"faust-streaming {version} is installed, but flywheel's Faust transport "
            f"(streams/worker/transport.py) replaces its Consumer._drain_messages and was tested only "
            f"with {', '.join(TESTED_FAUST_VERSIONS)}. Fix: install the tested version "
            f"(pip install 'faust-streaming=={TESTED_FAUST_VERSIONS[-1]}'), or compare "
            f"Consumer._drain_messages in faust/transport/consumer.py of {version} with "
            f"Consumer._drain_messages in streams/worker/transport.py, run tests/test_rebalance.py and "
            f"add {version} to TESTED_FAUST_VERSIONS.")


def broker_urls(servers: Iterable[str], *, fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
                poll_timeout_ms: int = DEFAULT_POLL_TIMEOUT_MS) -> str:
    """Faust's ``broker=`` value for ``host:port`` servers, on this transport."""
    servers = [s.strip() for s in servers if s.strip()]
    if not servers:
        raise ValueError("no Kafka bootstrap server given")
    query = urlencode({"fetch_max_wait_ms": int(fetch_max_wait_ms), "poll_timeout_ms": int(poll_timeout_ms)})
    return ";".join([f"{SCHEME}://{servers[0]}?{query}", *(f"{SCHEME}://{s}" for s in servers[1:])])


def _option(urls: list[URL], name: str, default: int) -> int:
    value = urls[0].query.get(name) if urls else None
    if value is None:
        return default
    try:
        ms = int(value)
    except ValueError:
        raise ValueError(f"broker URL option {name}={value!r} is not a whole number of milliseconds") from None
    if ms < 0:
        raise ValueError(f"broker URL option {name}={ms} must be 0 or more")
    return ms


class ConsumerThread(_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # The driver passes fetch_max_wait_ms=1500 to AIOKafkaConsumer, which keeps it until
        # start() builds its fetcher; set ours before that.
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise UntestedFaustVersion(
                "aiokafka's AIOKafkaConsumer no longer keeps _fetch_max_wait_ms; flywheel's transport "
                "(streams/worker/transport.py) was written against aiokafka 0.14: install aiokafka>=0.14,<0.15")
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class Consumer(_aiokafka.Consumer):
    """The aiokafka consumer with one flow-control race per fetched batch."""

    def _new_consumer_thread(self):
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - runs in the worker
        # faust 0.15.3's loop, with the per-message `wait_first(callback(message),
        # suspend_flow.wait())` turned into one race per batch (_deliver). Fetching stays
        # outside the race: cancelling a fetch that the consumer thread is running is not safe.
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        poll_timeout = self.transport.poll_timeout_ms / 1000.0
        suspend_flow = self.suspend_flow
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                batch = [item async for item in getmany(timeout=poll_timeout)]
                generation_id = self.app.consumer_generation_id  # as getmany saw it
                await self.sleep(0)  # getmany may return at once, again and again
                if batch and not self.should_stop:
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(self._deliver(batch, generation_id), suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, batch: list, generation_id: int) -> None:
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        sleep = asyncio.sleep
        delivered_to: dict = {}
        n = 0
        for tp, message in batch:
            # getmany checks these per record as it yields; delivery here comes later than
            # that, so check again (a rebalance also ends this task through suspend_flow)
            if not self.flow_active or app.consumer_generation_id != generation_id:
                break
            n += 1
            if n > 100:  # stock yields every 100 messages too
                await sleep(0)
                n = 0
            offset = message.offset
            r_offset = read_offset.get(tp)
            if r_offset is None or offset >= r_offset:
                if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                await callback(message)
                read_offset[tp] = offset
                delivered_to[tp] = None
            else:
                self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
        now = monotonic()
        inbound = app.monitor.stream_inbound_time
        for tp in delivered_to:
            inbound[tp] = now


class Transport(_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`Consumer`; options from the broker URL."""

    Consumer = Consumer

    def __init__(self, url: list[URL], app, *args: Any, **kwargs: Any) -> None:
        check_faust_version()
        super().__init__(url, app, *args, **kwargs)
        self.fetch_max_wait_ms = _option(url, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        self.poll_timeout_ms = _option(url, "poll_timeout_ms", DEFAULT_POLL_TIMEOUT_MS)


_log = logging.getLogger("flywheel.worker")


def describe_assignment(tps) -> str:
    """'teacher.logs[0,2] live.requests[1]' for a set of topic-partitions ('nothing' if empty)."""
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        if "__assignor-__leader" in tp.topic:  # Faust's internal topic
            continue
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())) or "nothing"


class App(faust.App):
    """faust.App without the Monitor sensor in the per-event path.

    Faust's rebalance bookkeeping expects the sensors to hand back some state (it warns
    "Missing sensor state for rebalance" otherwise); with no sensor, this app keeps its own:
    how many rebalances and how long the last one took (``rebalance_stats``)."""

    rebalances = 0
    last_rebalance_s: float | None = None
    holds = "nothing"  # the partitions held after the last rebalance (describe_assignment)
    _rebalance_started: float | None = None

    def on_init_dependencies(self):
        deps = super().on_init_dependencies()
        if self.monitor in set(self.sensors):
            self.sensors.remove(self.monitor)
        return deps

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        self._rebalance_started = monotonic()
        if not self._rebalancing_sensor_state:
            self._rebalancing_sensor_state = {"flywheel": self._rebalance_started}

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.rebalances += 1
        if self._rebalance_started is not None:
            self.last_rebalance_s = monotonic() - self._rebalance_started
            self.holds = describe_assignment(self.consumer.assignment())
            # the first one is reported on the "worker ready" line; later ones here
            _log.log(logging.DEBUG if self.rebalances == 1 else logging.INFO,
                     "rebalance #%d took %.2f s; this worker now holds %s", self.rebalances,
                     self.last_rebalance_s, self.holds)

    def rebalance_stats(self) -> dict:
        return {"rebalances": self.rebalances, "last_rebalance_s": self.last_rebalance_s}


# the registry Faust resolves broker URL schemes through (faust.transport.by_url)
drivers.TRANSPORTS[SCHEME] = f"{__name__}:Transport"
