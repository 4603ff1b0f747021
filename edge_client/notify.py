"""systemd notify protocol (sd_notify(3)), written by hand: one datagram per message on $NOTIFY_SOCKET.

The protocol is newline-separated `KEY=VALUE` lines in a single AF_UNIX datagram. A leading '@' in
the socket path names a Linux abstract socket (the '@' becomes a NUL byte). Outside systemd (no
$NOTIFY_SOCKET) every call is a cheap no-op, so the daemon calls these unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _address(path: str) -> str | bytes:
    # Abstract namespace: '@name' on the wire is '\0name' (no file on disk).
    return b"\0" + path[1:].encode() if path.startswith("@") else path


class SystemdNotifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to systemd; silent when not run by systemd."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if not path:
            return
        if not (path.startswith("/") or path.startswith("@")):
            # e.g. systemd 254+'s "vsock:CID:PORT", meant for VMs; nothing on a Pi uses it.
            log.warning("NOTIFY_SOCKET %r is not a unix socket path; systemd notifications disabled", path)
            return
        self._address = _address(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of $WATCHDOG_USEC (as sd_watchdog_enabled(3) advises).

        None when no watchdog is configured, or when $WATCHDOG_PID names another process (the
        variables were inherited from a parent that systemd watches, not meant for us).
        """
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and (not pid.isdigit() or int(pid) != os.getpid()):
            return None
        return int(usec) / 2 / 1_000_000

    def notify(self, *lines: str) -> bool:
        """Send one datagram; True when sent. Errors are logged, never raised: systemd being away
        must not take the camera pipeline down."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.warning("systemd notify failed: %s", exc)
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        # One line only: a newline would start a new KEY=VALUE assignment.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
