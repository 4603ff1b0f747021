"""The stop sequence, in order, within `stop_timeout_s`.

1. Capture and uploaders end: queued frames go to the spool, uploads under way may finish.
2. At the deadline, uploads still under way get a spooled copy; frames still queued are spooled.
3. Answers to what was sent are awaited within the same deadline; the correlator then stops (its
   thread is a daemon: a long poll under way is not sat out) and a frame still without an answer is
   counted unanswered (the next run discards its answer).
4. Open tracks end (their `end` events go out), presence stops ticking, then the outputs flush and close.
"""

from __future__ import annotations

import logging
import threading
import time

from edge_client.wiring import Parts

log = logging.getLogger(__name__)


def shut_down(parts: Parts, threads: dict[str, threading.Thread]) -> None:
    parts.stop.set()
    parts.notifier.stopping()
    deadline = time.monotonic() + parts.config.stop_timeout_s
    for name, thread in threads.items():
        if name != "correlator":
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    parts.delivery.spool_unfinished()
    parts.delivery.wait_for_answers(deadline)
    parts.correlator.close()
    if "correlator" in threads:
        threads["correlator"].join(timeout=0.5)
    parts.correlator.sweep()
    parts.correlator.abandon()
    parts.answers.expire(None)
    parts.presence.close()
    parts.outputs.close()
    # The summary itself is the CLI's to print (once, on stdout).
    log.info("stopped; spool keeps %d frame(s)", len(parts.spool))
