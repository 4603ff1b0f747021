"""URLs as they may appear in logs, `check` output and status pages: no credentials, no query.

Camera sources are often `rtsp://user:password@host/...` and webhook URLs often carry a token in the
query; both are logged on every start and reconnect. `redact_url` keeps what tells an operator which
camera or receiver is meant (scheme, host, port, path) and drops userinfo, query and fragment.
`scrub` does the same to free text that may quote a URL or parts of it (an exception message from
requests quotes the path and query it was sending to).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "<redacted>"
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(value: object) -> str:
    """`scheme://host:port/path` of a URL; anything else (a device index, a file path) as it is."""
    text = str(value)
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text
    host = parts.netloc.rpartition("@")[2]  # host[:port], as written (IPv6 brackets kept)
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, *urls: object) -> str:
    """`text` with the secrets of `urls` (userinfo, query, fragment; as written and percent-decoded)
    replaced wherever they appear, and any other `scheme://user:pass@` userinfo removed."""
    for url in urls:
        if url is None:
            continue
        parts = urlsplit(str(url))
        if not parts.netloc:
            continue
        text = text.replace(str(url), redact_url(url))
        userinfo = parts.netloc.rpartition("@")[0]
        for secret in (userinfo, parts.password or "", parts.query, parts.fragment):
            for form in {secret, unquote(secret)}:
                if form:
                    text = text.replace(form, REDACTED)
    return _USERINFO.sub("", text)
