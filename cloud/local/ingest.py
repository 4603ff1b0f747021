"""The local stack's ingest door: what template.yaml's `DetectionIngest` event source mapping does on AWS.

The ingest queue itself (and its DLQ) comes from template.yaml like every queue, and so does the bucket's
notification of objects put under uploads/: moto's S3 delivers S3 event notifications to SQS in server mode
(s3:TestEvent when configured, then one `{"Records": [...]}` message per put), so no local notifier is needed.
What is left is the trigger: an SQS poller from the ingest queue to the detection handler, with the
template's IngestBatchSize and the stack's DetectionTimeout.
"""

from __future__ import annotations

from typing import Any

from cloud.local.sqs_trigger import SqsTrigger
from cloud.local.template import as_built, load_template, parameter_values, transform

INGEST_PARAMETERS = ("IngestBatchSize",)  # read back from the created stack once it declares them


def ingest_batch_size(parameters: dict[str, str]) -> int:
    """The stack's IngestBatchSize, or the template's Default when the stack was created without it."""
    if "IngestBatchSize" in parameters:
        return int(parameters["IngestBatchSize"])
    return int(parameter_values(transform(as_built(load_template())), {})["IngestBatchSize"])


def start_ingest_trigger(stack: Any) -> SqsTrigger:
    """Start polling `stack`'s (a started cloud.local.stack.LocalStack) ingest queue into its detection
    handler, in this process (where the stack set the handler's environment). Stop it before the stack."""
    from cloud.detection import handler as detection

    queue = stack.resources.queues["IngestQueue"]
    trigger = SqsTrigger(
        stack.client("sqs"), detection.handler, queue_url=queue.url, queue_arn=queue.arn, region=stack.region,
        batch_size=ingest_batch_size(stack.parameters), batching_window_s=0.0,
        timeout_s=float(stack.parameters["DetectionTimeout"]), poll_wait_s=stack.config.poll_wait_s,
        function_name=f"{stack.config.prefix}detection",
    )
    trigger.start()
    return trigger
