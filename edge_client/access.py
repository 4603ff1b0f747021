"""Who may read the status server: the `Host` a request names, and its token when one is configured.

DNS rebinding: a web page open in a browser on the camera host can point its own domain at
127.0.0.1 and read the page's answers as same-origin. Its requests still carry `Host: <its domain>`,
so only the loopback names, the listen address itself and `metrics.allowed_hosts` are answered
(others get 421). Off loopback a token is required as well (`metrics.token`, `metrics.token_file` or
FACEPIPE_EDGE__METRICS__TOKEN): `Authorization: Bearer <token>` (Prometheus: `authorization` in the
scrape config), or the cookie a browser gets by opening `/?token=<token>` once (an HttpOnly cookie,
then a redirect to `/` so the token leaves the address bar).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from http.cookies import CookieError, SimpleCookie

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
WILDCARDS = frozenset({"0.0.0.0", "::"})
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")  # URL- and cookie-safe: as `?token=` and as a cookie value
TOKEN_RULE = ("16-256 characters of A-Z a-z 0-9 . _ ~ - "
              "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())')")
COOKIE_MAX_AGE_S = 30 * 24 * 3600
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")


def split_host(value: str) -> tuple[str, int | None]:
    """'Camera.LAN:9108' -> ('camera.lan', 9108); '[::1]' -> ('[::1]', None); ValueError when not a host[:port]."""
    match = _HOST.fullmatch(value.strip())
    if match is None or (match.group(2) and int(match.group(2)) > 65535):
        raise ValueError(f"not a host or host:port: {value!r}")
    return match.group(1).lower(), int(match.group(2)) if match.group(2) else None


def is_loopback(host: str) -> bool:
    """Whether a listen host ('127.0.0.1', '::1', 'localhost') is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_name(port: int) -> str:
    # Cookies ignore the port: two daemons on one host (two ports, two tokens) keep one each.
    return f"facepipe_status_{port}"


@dataclass(frozen=True)
class Access:
    """The rules of one server bound to `listen_host`:`port`."""

    listen_host: str
    port: int
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = None

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        try:
            name, port = split_host(header)
        except ValueError:
            return False
        port = 80 if port is None else port
        own = {f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host.lower()} - WILDCARDS
        if name in LOOPBACK_NAMES | own:
            return port == self.port
        return any(name == allowed and allowed_port in (None, port)
                   for allowed, allowed_port in map(split_host, self.allowed_hosts))

    def token_matches(self, candidate: str | None) -> bool:
        if self.token is None:
            return True
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def authorized(self, headers: Message) -> bool:
        """No token configured, or the request carries it (bearer header or this server's cookie)."""
        return self.token is None or any(self.token_matches(token) for token in self._presented(headers))

    def _presented(self, headers: Message) -> Iterable[str]:
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            yield value.strip()
        try:
            cookies = SimpleCookie(headers.get("Cookie") or "")
        except CookieError:
            return
        if (morsel := cookies.get(cookie_name(self.port))) is not None:
            yield morsel.value

    def set_cookie(self) -> str:
        """The Set-Cookie value that lets a browser in: HttpOnly (no script reads it), Lax (not sent by
        other sites' images or fetches)."""
        return (f"{cookie_name(self.port)}={self.token}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; "
                "SameSite=Lax")
