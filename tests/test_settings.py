import pytest

from kernel.settings import Secret, SettingsError, load_settings


def test_defaults_are_embedded():
    s = load_settings({})
    assert s.kafka.embedded and s.kafka.servers == "127.0.0.1:9092"
    assert s.clickhouse.url is None and str(s.data_dir) == ".flywheel"


def test_bad_numbers_name_the_variable():
    with pytest.raises(SettingsError, match="FLYWHEEL_WINDOW_SECONDS='soon'"):
        load_settings({"FLYWHEEL_WINDOW_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="FLYWHEEL_KAFKA_SECURITY_PROTOCOL"):
        load_settings({"FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_secrets_never_print(tmp_path):
    f = tmp_path / "pw"
    f.write_text("hunter2\n")
    s = load_settings({"FLYWHEEL_CLICKHOUSE_PASSWORD_FILE": str(f), "FLYWHEEL_KAFKA_SASL_PASSWORD": "swordfish",
                       "FLYWHEEL_KAFKA_SASL_MECHANISM": "PLAIN"})
    assert s.clickhouse.password.get() == "hunter2"
    assert "hunter2" not in repr(s) and "swordfish" not in repr(s) and "swordfish" not in str(s)
    assert s.kafka.aiokafka_kwargs()["sasl_plain_password"] == "swordfish"
    assert repr(Secret("x")) == "Secret('***')"


def test_unreadable_secret_file_names_the_fix():
    with pytest.raises(SettingsError, match="FLYWHEEL_CLICKHOUSE_PASSWORD_FILE"):
        load_settings({"FLYWHEEL_CLICKHOUSE_PASSWORD_FILE": "/nonexistent/pw"})
