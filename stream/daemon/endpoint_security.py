"""The daemon's ``[metrics]`` section turned into the endpoint's limits, TLS and credentials.

Read once, at the edge: the certificate and key files, and the bearer token or basic-auth
password from ``metrics.secret_file`` or the ``STREAMCL_METRICS_SECRET`` environment variable
(never from the config file itself).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path

from stream.daemon.config import MetricsConfig, ServeConfigError
from stream.data.secret_file import read_secret_text
from stream.observe.http_endpoint import EndpointLimits, EndpointSecurity

SECRET_ENV_VAR = "STREAMCL_METRICS_SECRET"
# RFC 6750 b64token (token68): what a client can send after "Bearer "
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def endpoint_limits(metrics: MetricsConfig) -> EndpointLimits:
    return EndpointLimits(
        request_timeout=metrics.request_timeout_seconds, max_connections=metrics.max_connections
    )


def endpoint_security(metrics: MetricsConfig, environ: Mapping[str, str]) -> EndpointSecurity:
    tls = None
    if metrics.tls_cert_file is not None and metrics.tls_key_file is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            tls.load_cert_chain(metrics.tls_cert_file, metrics.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ServeConfigError(
                f"metrics.tls_cert_file / tls_key_file: cannot load "
                f"{metrics.tls_cert_file}, {metrics.tls_key_file}: {exc}"
            ) from None
    if metrics.auth == "none":
        if metrics.secret_file is not None:
            raise ServeConfigError("metrics.secret_file is set but metrics.auth is 'none'")
        return EndpointSecurity(tls=tls)
    secret = _secret(metrics.secret_file, environ)
    if metrics.auth == "bearer":
        if not _TOKEN68.fullmatch(secret):
            # a space, a newline, a BOM or a non-ASCII letter no client can send as sent here:
            # the daemon started and every scrape got 401, with nothing to say why
            raise ServeConfigError(
                "metrics secret: a bearer token is letters, digits and -._~+/ (then = "
                "padding), RFC 6750; this one has other characters (a space, a line end, a "
                "byte-order mark, a non-ASCII letter?)"
            )
        return EndpointSecurity(tls=tls, bearer_token=secret)
    return EndpointSecurity(tls=tls, basic_user=metrics.username, basic_password=secret)


def _secret(path: Path | None, environ: Mapping[str, str]) -> str:
    from_env = environ.get(SECRET_ENV_VAR)
    if (from_env is None) == (path is None):
        raise ServeConfigError(
            f"metrics.auth needs its secret from exactly one of metrics.secret_file "
            f"and {SECRET_ENV_VAR}"
        )
    if from_env is not None:
        secret = from_env
    else:
        assert path is not None
        secret = read_secret_text(path, f"metrics.secret_file {path}", ServeConfigError)
    if len(secret) < 16:
        raise ServeConfigError(f"metrics secret: {len(secret)} characters, at least 16 needed")
    return secret
