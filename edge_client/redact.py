"""URLs as they may appear in logs, `check` output and status pages: scheme, host and port only.

Camera sources are often `rtsp://user:password@host/...`, and webhook URLs carry their secret in the
query (`?token=`) or in the path itself (Slack's `/services/T/B/XXXX`, Home Assistant's
`/api/webhook/<id>`); they are logged on every start, reconnect and failed post. `redact_url` keeps
what tells an operator which camera or receiver is meant (scheme, host, port) and drops userinfo,
path, query and fragment. `scrub` does the same to free text that may quote a URL or parts of it (an
exception message from requests quotes the path and query it was sending to).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "<redacted>"
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(value: object) -> str:
    """`scheme://host:port` of a URL (a `file://` URL keeps its path, as a plain file path is shown);
    anything else (a device index, a file path) as it is."""
    text = str(value)
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text
    host = parts.netloc.rpartition("@")[2]  # host[:port], as written (IPv6 brackets kept)
    return urlunsplit((parts.scheme, host, parts.path if parts.scheme == "file" else "", "", ""))


def scrub(text: str, *urls: object) -> str:
    """`text` with the secrets of `urls` (userinfo, path, query, fragment; as written and percent-decoded)
    replaced wherever they appear, and any other `scheme://user:pass@` userinfo removed."""
    for url in urls:
        if url is None:
            continue
        parts = urlsplit(str(url))
        if not parts.netloc:
            continue
        text = text.replace(str(url), redact_url(url))
        userinfo = parts.netloc.rpartition("@")[0]
        # A bare "/" is no secret (and is everywhere); a file path is shown anyway.
        path = parts.path if len(parts.path) > 1 and parts.scheme != "file" else ""
        for secret in (userinfo, parts.password or "", path, parts.query, parts.fragment):
            for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
                if form:
                    text = text.replace(form, REDACTED)
    return _USERINFO.sub("", text)
