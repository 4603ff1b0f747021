"""The real edge daemon SIGTERMed mid-run, under load (uploads under way, frames queued, answers due), then
started again on the same spool: every frame it accepted ends answered in the first run, or spooled at the
stop and answered after the restart; none is reported twice, none lost.

The first run offers 60 frames/s, several times what the local stack detects on a 2-core machine, so at the
SIGTERM some frames are still queued for upload: those go to the spool. (15 frames/s was not enough once the
session's stack had warm workers: in a whole-suite run it kept up, sent all 12 frames and spooled none.) The
second run is a short non-looping camera: it delivers the spool first, then its own frames, and exits once
everything is answered.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.edge.conftest import wait_until
from tests.reliability.conftest import answers, camera_folder, daemon_config, finish, spooled_ids, start_daemon

pytestmark = pytest.mark.slow


def test_sigterm_mid_run_then_restart_loses_no_frame(local_stack: Any, reply_queue: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "answers.jsonl"
    # Run 1: a looping camera faster than the stack; up to 16 frames in flight (uploading, queued or awaiting answers).
    config = daemon_config(local_stack, reply_queue, tmp_path, local_stack.function_url,
                           camera={"source": str(camera_folder(tmp_path / "camera1", 4)), "loop": True, "fps": 60},
                           throttle={"max_fps": 60, "max_in_flight": 16})
    first = start_daemon(local_stack, config, tmp_path / "run1.yaml")
    try:
        wait_until(lambda: len(answers(jsonl)) >= 8 or first.poll() is not None, 90, "answers in run 1")
        first.send_signal(signal.SIGTERM)
        run1 = finish(first, timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert run1.returncode == 0, run1.stderr[-3000:]
    assert "SIGTERM received" in run1.stderr and "Traceback" not in run1.stderr
    answered1 = {record["request_id"] for record in answers(jsonl)}
    at_stop = spooled_ids(tmp_path / "spool")
    c1 = run1.counts

    # Run 2: same spool, a camera of 4 frames that ends.
    config["camera"] = {"source": str(camera_folder(tmp_path / "camera2", 4)), "loop": False, "fps": 0}
    second = start_daemon(local_stack, config, tmp_path / "run2.yaml")
    run2 = finish(second, timeout=180)
    assert run2.returncode == 0, run2.stderr[-3000:]
    assert "Traceback" not in run2.stderr
    c2 = run2.counts
    records = answers(jsonl)
    ids = [record["request_id"] for record in records]
    answered2 = set(ids) - answered1
    lost1 = c1["captured"] - c1["gated"] - c1["answered"] - c1["rejected"] - len(at_stop)
    lost2 = len(at_stop) + c2["captured"] - c2["gated"] - c2["answered"] - c2["rejected"]
    print(f"\ndaemon restart: run 1 captured {c1['captured']}, gated {c1['gated']} (busy), "
          f"sent {c1['sent']}, answered {c1['answered']}, spooled at the SIGTERM {len(at_stop)}, "
          f"unanswered {c1['unanswered']}, duplicates {c1['duplicates']}; run 2 captured {c2['captured']}, "
          f"sent {c2['sent']} ({len(at_stop)} from the spool), answered {c2['answered']}, "
          f"duplicates {c2['duplicates']}; frames reported twice {len(ids) - len(set(ids))}; lost {lost1 + lost2}")

    # Run 1: what was sent was answered before the exit; what was still queued went to the spool.
    assert c1["unanswered"] == c1["dropped"] == c1["rejected"] == 0
    assert c1["sent"] == c1["answered"] == len(answered1)
    assert lost1 == 0
    assert len(at_stop) >= 1 and not at_stop & answered1  # queued, not sent: spooled, not answered yet
    # Run 2: the spool first, then its own frames; everything answered, the spool empty.
    assert c2["unanswered"] == c2["dropped"] == c2["rejected"] == 0
    assert c2["sent"] == c2["answered"] == len(answered2)
    assert at_stop <= answered2 and not spooled_ids(tmp_path / "spool")
    assert lost2 == 0
    assert len(ids) == len(set(ids))  # no frame reported in both runs
