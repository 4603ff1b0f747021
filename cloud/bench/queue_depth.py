"""The local stack's SQS server against moto as shipped, at queue depth: queueing messages, then receiving them all.

moto 5.2.5 does work per queued message on every request (cloud/emulator/moto_server.py): a receive checks each message
it delivers against the queue's retention period by building every queue attribute, the message counts among them;
a send builds them too; and every count reads the clock through datetimes, four times a message. Queueing and
receiving are quadratic in the queue's depth. Side by side in one run, the same server with moto's code and with the
local stack's. Run: `python -m cloud.bench.queue_depth`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import boto3
import moto.sqs.models
from moto.sqs.models import SQSBackend

BODY = "x" * 10_000  # about a one-face frame's request message
_REPLACED = [(SQSBackend, "is_message_valid_based_on_retention_period"), (moto.sqs.models, "unix_time"),
             (moto.sqs.models, "unix_time_millis")]
MOTOS_OWN = [getattr(owner, name) for owner, name in _REPLACED]  # before the local server replaces them


def _use(functions: list[Any]) -> None:
    for (owner, name), function in zip(_REPLACED, functions, strict=True):
        setattr(owner, name, function)


def queue_and_receive_ms(sqs: Any, name: str, depth: int) -> tuple[float, float]:
    """Queue `depth` messages, 10 a batch, then receive them all, 10 at a time (left in flight, as a busy consumer
    does): the milliseconds each took."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    started = time.perf_counter()
    for start in range(0, depth, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": BODY} for i in range(min(10, depth - start))])
    queued = time.perf_counter()
    received = 0
    while received < depth:
        received += len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))
    done = time.perf_counter()
    sqs.delete_queue(QueueUrl=url)
    return (queued - started) * 1000, (done - queued) * 1000


def main() -> None:
    from cloud.emulator.moto_server import MotoServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="10,100,500", help="queue depths, comma-separated")
    args = parser.parse_args()
    server = MotoServer()
    endpoint = server.start()
    local_stacks = [getattr(owner, name) for owner, name in _REPLACED]
    sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                                         aws_access_key_id="AKIAQUEUEDEPTHBENCH0", aws_secret_access_key="bench")
    print("| queued messages | moto as shipped: ms to queue them / to receive them all | the local stack's, ms "
          "| ratio |")
    print("| --- | --- | --- | --- |")
    try:
        for depth in (int(part) for part in args.depths.split(",")):
            _use(MOTOS_OWN)
            motos = queue_and_receive_ms(sqs, f"depth-{depth}-moto", depth)
            _use(local_stacks)
            ours = queue_and_receive_ms(sqs, f"depth-{depth}-local", depth)
            print(f"| {depth} | {motos[0]:.0f} / {motos[1]:.0f} | {ours[0]:.0f} / {ours[1]:.0f} "
                  f"| {motos[0] / ours[0]:.1f}x / {motos[1] / ours[1]:.1f}x |", flush=True)
    finally:
        _use(local_stacks)
        server.stop()


if __name__ == "__main__":
    main()
