"""NATS credentials from the environment reach the connection, never a log line or a repr."""

from __future__ import annotations

from events.config import NatsSettings


def test_user_and_password_come_from_the_environment_and_are_never_shown() -> None:
    settings = NatsSettings.from_env(
        {
            "DEALSTREAM_NATS_URL": "nats://api:url-secret@n1:4241, nats://n2:4242",
            "DEALSTREAM_NATS_USER": "worker",
            "DEALSTREAM_NATS_PASSWORD": "env-secret",
        }
    )
    assert (settings.user, settings.password) == ("worker", "env-secret")
    assert settings.shown_servers == ["nats://n1:4241", "nats://n2:4242"]
    assert "env-secret" not in repr(settings) and "url-secret" not in str(settings.shown_servers)


def test_without_credentials_nothing_is_sent() -> None:
    settings = NatsSettings.from_env({})
    assert settings.user is None and settings.password is None and settings.user_credentials is None
