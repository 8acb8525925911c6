"""PostgreSQL and service URLs as the platform takes them: one TCP server each, and shown
without secrets."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit


def without_password(url: str) -> str:
    """`url` as logs and banners may show it: its password (or a lone token in the user part,
    as NATS takes one) and its query (libpq takes `password=` there) replaced by `***`."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else "***"
        if not colon and parts.scheme.startswith("http"):
            # An HTTP user without a password is only a name.
            userinfo = user
    query = "***" if parts.query else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hostport}", query=query))


def check_tcp_dsn(url: str, name: str) -> str:
    """`url` unchanged if it names exactly one PostgreSQL server by TCP host; else ValueError.

    libpq also accepts a Unix-socket directory (`postgresql:///db?host=/run/postgresql`, a
    `%2F`-encoded host, or no host at all) and host lists. The platform cannot use those:
    it gives each tenant's services a jdbcUrl built from this URL's host and port, and a
    socket path on the platform's machine means nothing to a service elsewhere.
    """
    why = (
        f"{name} must name one PostgreSQL server as host:port "
        "(postgresql://user:password@db.example.internal:5432/platform), because the platform "
        "builds the jdbcUrl it hands to each tenant's services from that host and port"
    )
    parts = urlsplit(url)
    host = unquote(parts.netloc.rpartition("@")[2])
    if "," in host:
        raise ValueError(f"{why}; host lists are not supported")
    if not host or host.startswith(("/", ":", "@")):
        raise ValueError(f"{why}; Unix-socket connections are not supported")
    overrides = {key.lower() for key, _ in parse_qsl(parts.query)} & {"host", "hostaddr"}
    if overrides:
        raise ValueError(
            f"{why}; remove the {', '.join(sorted(overrides))} query parameter, which would "
            "make the platform connect somewhere other than the jdbcUrl says"
        )
    return url
