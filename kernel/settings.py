"""Process settings: where the broker and the warehouse are, built once at start-up.

Every setting comes from a CLI flag or a FLYWHEEL_* environment variable. Secrets come from
the environment or from a file (``*_FILE`` variables) and never appear in a repr or a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping


class SettingsError(ValueError):
    """A setting is wrong; the message names the variable and the fix."""


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    if env.get(name):
        return Secret(env[name])
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Secret(Path(path).read_text().strip())
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path!r} cannot be read ({exc.strerror}); "
                                f"point it at a readable file holding the secret") from None
    return None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to e.g. {default}") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _port(env: Mapping[str, str], name: str, default: int = 0) -> int:
    value = _int(env, name, default, minimum=0)
    if value > 65535:
        raise SettingsError(f"{name}={value} is not a TCP port; use 1-65535, or 0 for off")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. {default}") from None
    if value <= 0:
        raise SettingsError(f"{name}={value} must be positive")
    return value


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str | None = None  # None: start the embedded broker
    embedded_listen: str = "127.0.0.1:9092"
    embedded_storage: str = "disk"  # the embedded broker's: disk (under data_dir/broker) or memory
    trim_seconds: float = 10.0  # how often `up` deletes what every consumer group committed
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None    # None: the system's CA certificates
    ssl_certfile: str | None = None  # a client certificate (mutual TLS), with ssl_keyfile
    ssl_keyfile: str | None = None

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self):
        """The TLS context for SSL and SASL_SSL (aiokafka and Faust require one), else None."""
        if not self.tls:
            return None
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile)

    @property
    def embedded(self) -> bool:
        return self.bootstrap is None

    @property
    def servers(self) -> str:
        return self.bootstrap or self.embedded_listen

    def aiokafka_kwargs(self) -> dict:
        """Connection arguments shared by every aiokafka client we build."""
        kw: dict = {"bootstrap_servers": self.servers, "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password.get() if self.sasl_password else None)
        if self.tls:
            kw["ssl_context"] = self.ssl_context()
        return kw


@dataclass(frozen=True)
class ClickHouseSettings:
    url: str | None = None  # None: embedded chdb under data_dir
    database: str = "default"
    username: str = "default"
    password: Secret | None = None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".flywheel")
    tasks_dir: Path = Path("tasks")
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    window_seconds: int = 60          # tumbling window of curation_windows
    sink_batch_rows: int = 5000       # flush the warehouse sink at this many events...
    sink_flush_seconds: float = 1.0   # ...or after this long, whichever comes first
    consumer_group: str = "flywheel"
    fetch_max_wait_ms: int = 50       # Faust hard-codes 1500 ms, which stalls a busy topic behind its idle internal one
    dedupe_capacity: int = 1_000_000  # kept examples remembered per task for dedupe
    session_timeout_seconds: float = 10.0  # consumer group session; Tansu joins take half of it
    train_lease_seconds: float = 60.0      # a training run without a heartbeat this long is retried
    train_heartbeat_seconds: float = 5.0
    train_session_timeout_ms: int = 10_000
    stop_timeout_seconds: float = 30.0  # SIGTERM/SIGINT stop `up` within this (the worker is killed after it)
    restart_backoff_max_seconds: float = 30.0  # `up` restarts a dead worker after 1 s, doubling up to this
    metrics_host: str = "127.0.0.1"   # where /metrics and /health listen
    metrics_port: int = 0             # stream worker's /metrics and /health; 0: off
    train_metrics_port: int = 0       # training worker's; 0: off
    lag_sample_seconds: float = 5.0   # how often consumer lag is read from committed offsets
    console_token: Secret | None = None    # required by `flywheel console` on a non-loopback address
    console_host: str = "127.0.0.1"        # where the console of `flywheel up` (and `flywheel console`) listens
    console_port: int = 8765               # the console's port; 0: `flywheel up` starts no console
    canary_model_url: str = "http://127.0.0.1:8001"  # the model server the canary asks the candidate on
    canary_timeout_seconds: float = 5.0              # a candidate answer later than this is an error
    canary_concurrency: int = 8                      # candidate requests in flight at most (more are shed)

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    @property
    def broker_path(self) -> Path | None:
        """The embedded broker's files (None: memory storage, or an external broker)."""
        if not self.kafka.embedded or self.kafka.embedded_storage != "disk":
            return None
        return self.data_dir / "broker"

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# The mechanisms flywheel passes a username and password to (aiokafka's sasl_plain_* arguments).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _ssl_files(env: Mapping[str, str]) -> dict:
    out = {}
    for name in ("CAFILE", "CERTFILE", "KEYFILE"):
        var = f"FLYWHEEL_KAFKA_SSL_{name}"
        path = env.get(var) or None
        if path is not None and not os.path.isfile(path):
            raise SettingsError(f"{var}={path!r} is not a file; point it at a PEM file or unset it")
        out[f"ssl_{name.lower()}"] = path
    if bool(out["ssl_certfile"]) != bool(out["ssl_keyfile"]):
        raise SettingsError("FLYWHEEL_KAFKA_SSL_CERTFILE and FLYWHEEL_KAFKA_SSL_KEYFILE go together "
                            "(a client certificate and its key): set both or neither")
    return out


def load_settings(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from FLYWHEEL_* variables, then apply non-None overrides (CLI flags)."""
    env = os.environ if env is None else env
    protocol = env.get("FLYWHEEL_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if protocol not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
        raise SettingsError(f"FLYWHEEL_KAFKA_SECURITY_PROTOCOL={protocol!r}: use PLAINTEXT, SSL, "
                            "SASL_PLAINTEXT or SASL_SSL")
    mechanism = env.get("FLYWHEEL_KAFKA_SASL_MECHANISM") or None
    if mechanism is not None and mechanism not in SASL_MECHANISMS:
        raise SettingsError(f"FLYWHEEL_KAFKA_SASL_MECHANISM={mechanism!r} is not supported: use one of "
                            f"{', '.join(SASL_MECHANISMS)} (with FLYWHEEL_KAFKA_SASL_USERNAME and _PASSWORD)")
    storage = env.get("FLYWHEEL_BROKER_STORAGE", "disk")
    if storage not in {"disk", "memory"}:
        raise SettingsError(f"FLYWHEEL_BROKER_STORAGE={storage!r}: use disk (the default: topics survive a "
                            "restart of `up`) or memory (nothing on disk, nothing ever freed)")
    kafka = KafkaSettings(
        bootstrap=env.get("FLYWHEEL_KAFKA_BOOTSTRAP") or None,
        embedded_listen=env.get("FLYWHEEL_EMBEDDED_LISTEN", "127.0.0.1:9092"),
        embedded_storage=storage,
        trim_seconds=_float(env, "FLYWHEEL_BROKER_TRIM_SECONDS", 10.0),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=env.get("FLYWHEEL_KAFKA_SASL_USERNAME") or None,
        sasl_password=_secret(env, "FLYWHEEL_KAFKA_SASL_PASSWORD"),
        **_ssl_files(env),
    )
    clickhouse = ClickHouseSettings(
        url=env.get("FLYWHEEL_CLICKHOUSE_URL") or None,
        database=env.get("FLYWHEEL_CLICKHOUSE_DATABASE", "default"),
        username=env.get("FLYWHEEL_CLICKHOUSE_USER", "default"),
        password=_secret(env, "FLYWHEEL_CLICKHOUSE_PASSWORD"),
    )
    settings = Settings(
        data_dir=Path(env.get("FLYWHEEL_DATA_DIR", ".flywheel")),
        tasks_dir=Path(env.get("FLYWHEEL_TASKS_DIR", "tasks")),
        kafka=kafka,
        clickhouse=clickhouse,
        window_seconds=_int(env, "FLYWHEEL_WINDOW_SECONDS", 60),
        sink_batch_rows=_int(env, "FLYWHEEL_SINK_BATCH_ROWS", 5000),
        sink_flush_seconds=_float(env, "FLYWHEEL_SINK_FLUSH_SECONDS", 1.0),
        consumer_group=env.get("FLYWHEEL_CONSUMER_GROUP", "flywheel"),
        fetch_max_wait_ms=_int(env, "FLYWHEEL_FETCH_MAX_WAIT_MS", 50),
        dedupe_capacity=_int(env, "FLYWHEEL_DEDUPE_CAPACITY", 1_000_000, minimum=1000),
        session_timeout_seconds=_float(env, "FLYWHEEL_SESSION_TIMEOUT_SECONDS", 10.0),
        train_lease_seconds=_float(env, "FLYWHEEL_TRAIN_LEASE_SECONDS", 60.0),
        train_heartbeat_seconds=_float(env, "FLYWHEEL_TRAIN_HEARTBEAT_SECONDS", 5.0),
        train_session_timeout_ms=_int(env, "FLYWHEEL_TRAIN_SESSION_TIMEOUT_MS", 10_000),
        stop_timeout_seconds=_float(env, "FLYWHEEL_STOP_TIMEOUT_SECONDS", 30.0),
        restart_backoff_max_seconds=_float(env, "FLYWHEEL_RESTART_BACKOFF_MAX_SECONDS", 30.0),
        metrics_host=env.get("FLYWHEEL_METRICS_HOST", "127.0.0.1"),
        metrics_port=_port(env, "FLYWHEEL_METRICS_PORT"),
        train_metrics_port=_port(env, "FLYWHEEL_TRAIN_METRICS_PORT"),
        lag_sample_seconds=_float(env, "FLYWHEEL_LAG_SAMPLE_SECONDS", 5.0),
        console_token=_secret(env, "FLYWHEEL_CONSOLE_TOKEN"),
        console_host=env.get("FLYWHEEL_CONSOLE_HOST", "127.0.0.1"),
        console_port=_port(env, "FLYWHEEL_CONSOLE_PORT", 8765),
        canary_model_url=env.get("FLYWHEEL_CANARY_MODEL_URL", "http://127.0.0.1:8001"),
        canary_timeout_seconds=_float(env, "FLYWHEEL_CANARY_TIMEOUT_SECONDS", 5.0),
        canary_concurrency=_int(env, "FLYWHEEL_CANARY_CONCURRENCY", 8, minimum=1),
    )
    return settings.with_overrides(**overrides)
