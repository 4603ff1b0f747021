"""The course workload generator's protocol against `facepipe local up --auth none`: a client written here
exactly to it (unsigned JSON POST, 200 required, long-poll the response queue one message at a time, match
request_id, read `result`) gets every one-face photo's name right."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.course_client import ask
from tests.local_up import LocalUp, local_up
from tests.photos import SHARED, requires_shared

pytestmark = [pytest.mark.slow, requires_shared]
PROBES = 10  # the 100-request run at one request per second is cloud/bench/json_protocol.py


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUp]:
    with local_up("--auth", "none", "--prefix", f"json-{uuid.uuid4().hex[:6]}-") as stack:
        people = {p.name: [p / "1.jpg"] for p in sorted((SHARED / "identities").iterdir()) if p.is_dir()}
        stack.enroll(people, tmp_path_factory.mktemp("enroll"))
        yield stack


def test_course_client_gets_every_name_right(open_stack: LocalUp) -> None:
    probes = sorted((SHARED / "identities").glob("*/2.jpg"))[:PROBES]
    assert len(probes) == PROBES
    sqs, env = open_stack.client("sqs"), open_stack.exports
    results = {p.parent.name: ask(env["FACEPIPE_FUNCTION_URL"], sqs, env["FACEPIPE_RESPONSE_QUEUE_URL"], p)
               for p in probes}
    assert results == {name: name for name in results}


def test_unsigned_raw_upload_still_202_and_bad_json_400(open_stack: LocalUp) -> None:
    url = open_stack.exports["FACEPIPE_FUNCTION_URL"]
    raw = requests.post(url, data=sorted((SHARED / "identities").glob("*/2.jpg"))[0].read_bytes(),
                        headers={"Content-Type": "image/jpeg", "X-Device-Id": "raw-cam"}, timeout=60)
    assert raw.status_code == 202, raw.text
    bad = requests.post(url, data=json.dumps({"request_id": str(uuid.uuid4())}),
                        headers={"Content-Type": "application/json"}, timeout=60)
    assert bad.status_code == 400 and "content" in bad.json()["error"]
