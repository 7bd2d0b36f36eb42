"""Stream declarations: Kafka security from the environment, validated, never shown."""

from __future__ import annotations

import pytest

from medallion_platform.connectors.streams import BrokerUnavailable
from medallion_platform.connectors.streams.spec import StreamSpec
from medallion_platform.defs.streams import build_stream_resource
from medallion_platform.devkit.brokers.tansu import TansuBroker

SECRET = "s3cret-Pa55word"
SASL = {"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "username_env": "EV_USER"}


def spec(**kwargs) -> StreamSpec:
    return StreamSpec(
        name="events",
        description="Clicks.",
        broker="kafka",
        topic="clicks",
        address_env="EV_BOOTSTRAP",
        password_env="EV_PASSWORD",
        **kwargs,
    )


def test_sasl_settings_reach_librdkafka_with_the_secrets_from_the_environment() -> None:
    security = spec(kafka_security=SASL).kafka_security
    assert security is not None
    assert security.librdkafka("alice", SECRET) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": SECRET,
    }
    with pytest.raises(ValueError, match="needs a username and a password"):
        security.librdkafka("alice", None)
    assert spec(kafka_security={"protocol": "SSL"}).kafka_security.librdkafka(None, None) == {
        "security.protocol": "SSL"
    }


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="not an environment variable name"):
        spec(kafka_security={**SASL, "username_env": "alice"})
    with pytest.raises(ValueError, match="kafka_security is for broker: kafka"):
        StreamSpec(
            name="events",
            description="Clicks.",
            broker="redis",
            topic="clicks",
            address_env="EV_URL",
            kafka_security=SASL,
        )


def test_the_resource_reads_user_and_password_from_env_vars(monkeypatch) -> None:
    monkeypatch.setenv("EV_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("EV_USER", "alice")
    monkeypatch.setenv("EV_PASSWORD", SECRET)
    resource = build_stream_resource(spec(kafka_security=SASL))
    # Unresolved EnvVars until run time: the declaration holds names, not values.
    assert SECRET not in repr(resource) and "EV_PASSWORD" in repr(resource)


def test_a_failed_sasl_connection_names_the_broker_not_the_secret(tmp_path) -> None:
    """SASL against a broker that does not speak it: a clear BrokerUnavailable, no secret."""
    plaintext = spec(kafka_security={**SASL, "protocol": "SASL_PLAINTEXT"})
    with TansuBroker(tmp_path / "tansu") as broker:
        source = plaintext.source(broker.bootstrap_servers, SECRET, "alice")
        with pytest.raises(BrokerUnavailable) as error:
            source.latest()
        source.close()
    assert broker.bootstrap_servers in str(error.value)
    assert SECRET not in str(error.value) and SECRET not in repr(source)
