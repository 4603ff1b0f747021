"""The local stack's SQS server against moto's own at queue depth: receiving every queued message, 10 at a time.

moto 5.2.5 checks each message it delivers against the queue's retention period by building every queue attribute,
the message counts among them (cloud/local/moto_server.py): receiving is quadratic in the queue's depth. Side by
side in one run, the same server with moto's check and with the local stack's. Run: `python -m benchmarks.queue_depth`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import boto3
from moto.sqs.models import SQSBackend

MOTOS_OWN = SQSBackend.is_message_valid_based_on_retention_period  # before the local server replaces it
BODY = "x" * 10_000  # about a one-face frame's request message


def receive_all_ms(sqs: Any, name: str, depth: int) -> float:
    """Queue `depth` messages, then receive them all, 10 at a time (left in flight, as a busy consumer does)."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for start in range(0, depth, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": BODY} for i in range(min(10, depth - start))])
    started, received = time.perf_counter(), 0
    while received < depth:
        received += len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))
    elapsed = (time.perf_counter() - started) * 1000
    sqs.delete_queue(QueueUrl=url)
    return elapsed


def main() -> None:
    from cloud.local.moto_server import MotoServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="10,100,500", help="queue depths, comma-separated")
    args = parser.parse_args()
    server = MotoServer()
    endpoint = server.start()
    local_stacks = SQSBackend.is_message_valid_based_on_retention_period
    sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                                         aws_access_key_id="AKIAQUEUEDEPTHBENCH0", aws_secret_access_key="bench")
    print("| queued messages | moto's check, ms to receive them all | the local stack's, ms | ratio |")
    print("| --- | --- | --- | --- |")
    try:
        for depth in (int(part) for part in args.depths.split(",")):
            SQSBackend.is_message_valid_based_on_retention_period = MOTOS_OWN  # type: ignore[method-assign]
            motos = receive_all_ms(sqs, f"depth-{depth}-moto", depth)
            SQSBackend.is_message_valid_based_on_retention_period = local_stacks  # type: ignore[method-assign]
            ours = receive_all_ms(sqs, f"depth-{depth}-local", depth)
            print(f"| {depth} | {motos:.0f} | {ours:.0f} | {motos / ours:.1f}x |", flush=True)
    finally:
        SQSBackend.is_message_valid_based_on_retention_period = local_stacks  # type: ignore[method-assign]
        server.stop()


if __name__ == "__main__":
    main()
