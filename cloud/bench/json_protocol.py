"""The course workload generator's protocol at a steady rate against `facepipe local up --auth none`.

Starts the local stack (open Function URL), enrolls every shared identity's 1.jpg, then sends N JSON uploads
of the identities' 2.jpg, one every 1/RATE s, each as that client does it: unsigned JSON POST (200 required),
long-poll the response queue one message at a time until the answer with its request_id, compare `result`
with the person's name. Prints the total duration, answers right, and latency. Run:
`python -m cloud.bench.json_protocol --requests 100 --rate 1`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from tests.course_client import ask
from tests.local_up import local_up
from tests.photos import SHARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1.0, help="requests per second")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    probes = sorted((SHARED / "identities").glob("*/2.jpg"))
    with local_up("--auth", "none", "--prefix", f"bench-{uuid.uuid4().hex[:6]}-") as stack, \
            tempfile.TemporaryDirectory() as workdir:
        people = {p.name: [p / "1.jpg"] for p in sorted((SHARED / "identities").iterdir()) if p.is_dir()}
        stack.enroll(people, Path(workdir))
        sqs, env = stack.client("sqs"), stack.exports
        right, latencies = 0, []
        started = time.monotonic()
        for i in range(args.requests):
            time.sleep(max(0.0, started + i / args.rate - time.monotonic()))  # one every 1/rate s
            photo = probes[i % len(probes)]
            sent = time.monotonic()
            result = ask(env["FACEPIPE_FUNCTION_URL"], sqs, env["FACEPIPE_RESPONSE_QUEUE_URL"], photo,
                                 args.timeout)
            latencies.append(time.monotonic() - sent)
            right += result == photo.parent.name
        total = time.monotonic() - started
    print(f"JSON protocol client: {args.requests} requests at {args.rate:g}/s over {len(probes)} photos: "
          f"total {total:.1f} s, answers right {right}/{args.requests}; request->answer latency "
          f"mean {statistics.mean(latencies):.2f} s, p50 {statistics.median(latencies):.2f} s, "
          f"max {max(latencies):.2f} s")


if __name__ == "__main__":
    main()
