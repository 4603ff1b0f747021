"""The Function URL unreachable for 30 s while the real edge daemon runs, then back: every captured frame
that was not gated is answered once the spool drains; nothing is lost.

A TCP proxy on 127.0.0.1 stands in front of the local Function URL; taking it down refuses connections
and cuts those open, as a lost uplink does. The daemon (`facepipe-edge run`, its own process) plays a
folder of real photos at 2 frames/s and ends by itself once every frame is delivered and answered.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.edge.conftest import TcpProxy, wait_until
from tests.reliability.conftest import (
    answers,
    camera_folder,
    daemon_config,
    finish,
    spooled_ids,
    start_daemon,
)

pytestmark = pytest.mark.slow

FRAMES, FPS = 100, 2.0  # 50 s of capture
OUTAGE_S = 30.0


def test_function_url_unreachable_for_30_s_loses_no_frame(
    local_stack: Any, reply_queue: str, tmp_path: Path, function_url_proxy: TcpProxy
) -> None:
    proxy = function_url_proxy
    proxy.up()
    config = daemon_config(local_stack, reply_queue, tmp_path, proxy.url,
                           camera={"source": str(camera_folder(tmp_path / "camera", FRAMES)), "fps": FPS},
                           throttle={"max_fps": 2 * FPS})  # above the camera's rate: no frame rate-gated
    started = time.monotonic()
    daemon = start_daemon(local_stack, config, tmp_path / "edge.yaml")
    try:
        # GIVEN the daemon running and answered
        wait_until(lambda: len(answers(tmp_path / "answers.jsonl")) >= 4 or daemon.poll() is not None, 60,
                   "the first answers")
        answered_before = len(answers(tmp_path / "answers.jsonl"))
        # WHEN the Function URL is unreachable for 30 s
        proxy.down()
        outage_started = time.monotonic()
        wait_until(lambda: len(spooled_ids(tmp_path / "spool")) >= 10, 30, "frames spooled during the outage")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        answered_during = len(answers(tmp_path / "answers.jsonl")) - answered_before
        spool_at_peak = len(spooled_ids(tmp_path / "spool"))
        proxy.up()
        outage_s = time.monotonic() - outage_started
        # THEN the daemon drains its spool, delivers the rest of the clip and stops by itself
        run = finish(daemon, timeout=240)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    wall_s = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    counts = run.counts
    records = answers(tmp_path / "answers.jsonl")
    ids = [record["request_id"] for record in records]
    lost = counts["captured"] - counts["gated"] - counts["answered"] - counts["rejected"]
    print(f"\nnetwork loss ({outage_s:.0f} s outage, run {wall_s:.0f} s): captured {counts['captured']}, "
          f"gated {counts['gated']}, sent {counts['sent']}, answered {counts['answered']} "
          f"({answered_during} during the outage, from uploads already accepted), spooled {counts['spooled']} "
          f"(at most {spool_at_peak} at once), duplicates {counts['duplicates']}, dropped {counts['dropped']}, "
          f"rejected {counts['rejected']}, unanswered {counts['unanswered']}, lost {lost}")
    assert counts["captured"] == FRAMES
    assert counts["spooled"] >= 20  # the outage was real: about 2 frames/s went to disk for 30 s
    assert counts["unanswered"] == counts["dropped"] == counts["rejected"] == 0
    assert counts["sent"] == counts["answered"] == FRAMES - counts["gated"]
    assert lost == 0
    assert len(ids) == len(set(ids)) == counts["answered"]  # each frame reported once
    assert not spooled_ids(tmp_path / "spool")
    names = {face["name"] for record in records for face in record["faces"]}
    assert {"barack_obama", "joe_biden", "unknown"} <= names
