"""stream/daemon/endpoint_security.py: [metrics] TLS and credentials, read at the edge."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream.daemon.config import MetricsConfig, ServeConfigError
from stream.daemon.endpoint_security import endpoint_limits, endpoint_security

SECRET = "a-token-of-sixteen+"


def test_bearer_token_from_a_file_or_the_environment(tmp_path):
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    from_file = endpoint_security(MetricsConfig(auth="bearer", secret_file=token), {})
    assert from_file.bearer_token == SECRET and from_file.tls is None
    from_env = endpoint_security(MetricsConfig(auth="bearer"), {"STREAMCL_METRICS_SECRET": SECRET})
    assert from_env.allows(f"Bearer {SECRET}") and not from_env.allows("Bearer nope")


def test_basic_auth_needs_a_user_and_a_password():
    security = endpoint_security(
        MetricsConfig(auth="basic", username="prom"), {"STREAMCL_METRICS_SECRET": SECRET}
    )
    assert security.basic_user == "prom" and security.basic_password == SECRET
    with pytest.raises(ValidationError, match="username"):
        MetricsConfig(auth="basic")


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        (MetricsConfig(auth="bearer"), {}, "exactly one of"),
        (MetricsConfig(auth="bearer"), {"STREAMCL_METRICS_SECRET": "short"}, "at least 16"),
        (MetricsConfig(secret_file="/x"), {}, "auth is 'none'"),
        (
            MetricsConfig(tls_cert_file="/no/cert.pem", tls_key_file="/no/key.pem"),
            {},
            "cannot load",
        ),
    ],
)
def test_unusable_settings_are_one_clear_error(config, environ, message):
    with pytest.raises(ServeConfigError, match=message):
        endpoint_security(config, environ)


@pytest.mark.parametrize(
    "secret",
    [SECRET + " ", " " + SECRET, SECRET + "\n", "\ufeff" + SECRET, "pässwörd-0123456789€"],
    ids=["trailing-space", "leading-space", "env-newline", "bom", "non-ascii"],
)
def test_a_bearer_token_no_client_can_send_is_refused_at_start(secret):
    """Each started the daemon, and then every scrape got 401 with nothing to say why."""
    with pytest.raises(ServeConfigError, match="RFC 6750"):
        endpoint_security(MetricsConfig(auth="bearer"), {"STREAMCL_METRICS_SECRET": secret})
    # as a basic-auth password each is fine: the pair travels base64-encoded
    endpoint_security(
        MetricsConfig(auth="basic", username="prom"), {"STREAMCL_METRICS_SECRET": secret}
    )


def test_tls_needs_both_files_and_limits_come_from_the_section():
    with pytest.raises(ValidationError, match="tls_key_file"):
        MetricsConfig(tls_cert_file="/x.pem")
    limits = endpoint_limits(MetricsConfig(request_timeout_seconds=3, max_connections=7))
    assert (limits.request_timeout, limits.max_connections) == (3, 7)
