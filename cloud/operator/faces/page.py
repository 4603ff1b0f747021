"""`facepipe faces serve`: the faces library page, on the operator's machine with the stack's admin credentials.

- `GET /`: retention, unknown faces grouped, recent faces, people (view.py), filtered by `days`, `camera`, `name`,
  `unknown`; `GET /enrolled.jpg?name=&source=`: one enrollment crop;
- `POST /action`: one verb of actions.py (`assign`, `wrong`, `delete`, `rename`, `unenroll`, `forget`), then a
  303 back to the page with what was done.

Bound to loopback only (the page shows faces and edits the gallery; from elsewhere, forward the port over SSH).
Every request's `Host` must be this server's (edge_client/access.py, against DNS rebinding: 421 otherwise) and,
since every local user reaches loopback, carry its token (`serve` makes a random one per start and prints the URL
with it; `/?token=` trades it for an HttpOnly cookie): 401 otherwise;
every POST must carry this server's CSRF token (a random one per start, in every form) and, when the browser
sends one, this server's `Origin`: 403 otherwise.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from botocore.exceptions import ClientError

from cloud.functions.contracts import name_refusal
from cloud.functions.recognition.enrolled_crops import enrolled_key
from cloud.functions.recognition.gallery import GalleryError
from cloud.operator.faces import store
from cloud.operator.faces.actions import Library, LibraryError
from cloud.operator.faces.cli import add_common_arguments, add_settle_argument, library, outlived_note
from cloud.operator.faces.store import NotARecord
from cloud.operator.faces.view import Filters, page
from edge_client.access import TOKEN_PATTERN, TOKEN_RULE, Access, is_loopback

log = logging.getLogger("facepipe.faces")
TOKEN_ENV = "FACEPIPE_FACES_TOKEN"
_BACK = re.compile(r"/\?[A-Za-z0-9%&=+._~-]*")
MAX_FORM_BYTES = 256 * 1024  # a group of a few hundred keys
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make the browser send `Origin: null` with each form
    "Cache-Control": "no-store",
}


class FacesServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, lib: Library, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        if not is_loopback(host):
            raise ValueError(f"the faces page binds loopback addresses only, not {host}: forward its port over SSH")
        self.lib = lib
        self.csrf = secrets.token_urlsafe(32)
        super().__init__((host, port), _Handler)
        self.access = Access(host, self.server_address[1], token=token)
        self.lock = threading.Lock()  # one verb at a time from this page (the gallery's own writes are conditional)

    @property
    def url(self) -> str:
        return page_url(str(self.server_address[0]), self.server_address[1])

    @property
    def login_url(self) -> str:
        """The URL to open once: with the token, which the page trades for a cookie."""
        return self.url if self.access.token is None else f"{self.url}?{urlencode({'token': self.access.token})}"


def page_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"  # an IPv6 address in brackets


class _Handler(BaseHTTPRequestHandler):
    server: FacesServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, why: str) -> None:
        self._send(status, why.encode(), "text/plain; charset=utf-8")

    def _admitted(self) -> bool:
        """Host check, then the token (when the server has one): a bearer header or the cookie; else refused."""
        access = self.server.access
        if not access.host_allowed(self.headers.get("Host")):
            self._refuse(421, "this server answers to its own address only")
            return False
        if not access.authorized(self.headers):
            self._refuse(401, "a token is required: open the URL `facepipe faces serve` printed (/?token=...)")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        access = self.server.access
        if url.path == "/" and "token" in query and access.token and access.host_allowed(self.headers.get("Host")):
            if not access.token_matches(query["token"]):
                return self._refuse(401, "wrong token")
            # a cookie for the page's own requests, and the token out of the address bar
            return self._send(303, b"", headers={"Location": "/", "Set-Cookie": access.set_cookie()})
        if not self._admitted():
            return None
        if url.path == "/":
            return self._page(query)
        if url.path == "/enrolled.jpg":
            return self._enrolled(query.get("name", ""), query.get("source", ""))
        return self._refuse(404, "not found")

    def _page(self, query: dict[str, str]) -> None:
        try:
            filters = Filters(days=max(1, min(400, int(query.get("days") or 7))), camera=query.get("camera", ""),
                              name=query.get("name", ""), unknown_only=query.get("unknown") == "1")
        except ValueError:
            return self._refuse(400, "days must be a number")
        lib = self.server.lib
        try:
            faces = lib.recent(filters.days, device=filters.camera or None, name=filters.name or None,
                               unknown_only=filters.unknown_only)
            everyone = faces if not (filters.camera or filters.name or filters.unknown_only) else lib.recent(7)
            html = page(faces=faces, groups=lib.unknown_groups(faces), people=lib.people(everyone),
                        retention=lib.retention(), filters=filters, csrf=self.server.csrf,
                        message=query.get("done", ""), bucket=lib.bucket)
        except ValueError as exc:  # an invalid name filter
            return self._refuse(400, str(exc))
        except ClientError as exc:
            return self._refuse(502, f"S3: {exc}")
        self._send(200, html.encode())

    def _enrolled(self, name: str, source: str) -> None:
        if name_refusal(name) or not store.SOURCE.fullmatch(source):
            return self._refuse(400, "not an enrollment crop")
        try:
            jpeg = store.get_bytes(self.server.lib.bucket, enrolled_key(name, source))
        except ClientError:
            return self._refuse(404, "no such enrollment crop")
        self._send(200, jpeg, "image/jpeg")

    def do_POST(self) -> None:  # noqa: N802
        server = self.server
        if not self._admitted():
            return None
        origin = self.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != server.url.rstrip("/") \
                and origin.rstrip("/") != f"http://{self.headers.get('Host')}":
            return self._refuse(403, "cross-origin POST refused")
        length = int(self.headers.get("Content-Length") or 0)
        if urlsplit(self.path).path != "/action" or not 0 < length <= MAX_FORM_BYTES:
            return self._refuse(400, "POST /action with a form")
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        token = (form.get("csrf") or [""])[-1]
        if not hmac.compare_digest(token.encode(), server.csrf.encode()):
            return self._refuse(403, "missing or wrong CSRF token: reload the page")
        field: Callable[[str], str] = lambda name: (form.get(name) or [""])[-1].strip()  # noqa: E731
        try:
            with server.lock:
                done = _act(server.lib, field("verb"), form.get("key", []), field)
        except (LibraryError, GalleryError, NotARecord, ValueError, ClientError) as exc:
            done = f"not done: {exc}"
        back = field("back")  # into a header: only this page with a query urlencode makes (no CR/LF, no other site)
        back = back if _BACK.fullmatch(back) else "/?"
        self._send(303, b"", headers={"Location": back + "&" + urlencode({"done": done})})


def _act(lib: Library, verb: str, keys: list[str], field: Callable[[str], str]) -> str:
    """One verb; returns what was done, for the page."""
    if verb == "assign":
        moved = lib.assign(keys, field("name"))
        return f"assigned {len(keys)} face(s) to {field('name')}" + outlived_note(len(keys) - len(moved))
    if verb == "wrong":
        [key] = keys
        if lib.wrong(key) is None:
            return "kept as a negative example" + outlived_note(1)
        return "kept as a negative example; the face is now unknown"
    if verb == "delete":
        return f"deleted {lib.delete(keys)} face record(s)"
    if verb == "rename":
        lib.rename(field("old"), field("name"))
        return f"renamed {field('old')} to {field('name')}"
    if verb == "unenroll":
        return f"removed {lib.remove_enrollment(field('name'), field('source'))} embedding(s) of {field('name')}"
    if verb == "forget":
        if field("confirm") != "yes":
            return "not done: tick 'sure' to forget someone"
        return lib.forget(field("name")).lines()[0]
    return f"not done: unknown action {verb[:40]!r}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_settle_argument(parser)
    parser.add_argument("--listen", default="127.0.0.1:8765",
                        help="host:port, a loopback address (default %(default)s; port 0 = a free one)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token-file", type=Path,
                       help="the page's token, from this file (default: $FACEPIPE_FACES_TOKEN, else a random one per "
                            f"start, in the URL printed): {TOKEN_RULE}")
    token.add_argument("--no-token", action="store_true",
                       help="no token: any local user's process can then use the page (a single-user host only)")


def _token(args: argparse.Namespace) -> str | None:
    """Other users of this host reach loopback too: the page needs a token unless told otherwise."""
    if args.no_token:
        return None
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get(TOKEN_ENV)
    token = token or secrets.token_urlsafe(32)
    if not TOKEN_PATTERN.fullmatch(token):
        raise ValueError(f"the page's token must be {TOKEN_RULE}")
    return token


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    try:
        server = FacesServer(library(args), host.strip("[]") or "127.0.0.1", int(port), _token(args))
    except (LibraryError, ValueError, OSError) as exc:
        print(f"facepipe faces serve: {exc}", file=sys.stderr)
        return 2
    print(f"faces library on {server.login_url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
