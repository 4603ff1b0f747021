"""Wiring: every part of the daemon built from the config, each once, and connected."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from edge_client.answers import AnswerHandler
from edge_client.camera import Camera
from edge_client.config import EdgeConfig
from edge_client.correlator import Correlator, PendingRequests, make_sqs_client
from edge_client.delivery import Delivery
from edge_client.metrics import EdgeMetrics
from edge_client.notify import SystemdNotifier
from edge_client.outputs import Outputs
from edge_client.presence import Presence
from edge_client.spool import Spool
from edge_client.status import LiveStatus
from edge_client.throttle import InFlight, Throttle
from edge_client.tracker import Tracker
from edge_client.uploader import Signer, Uploader


@dataclass
class Parts:
    config: EdgeConfig
    stop: threading.Event
    metrics: EdgeMetrics
    notifier: SystemdNotifier
    camera: Camera
    in_flight: InFlight
    throttle: Throttle
    spool: Spool
    pending: PendingRequests
    delivery: Delivery
    outputs: Outputs
    presence: Presence
    status: LiveStatus
    answers: AnswerHandler
    correlator: Correlator


def wire(config: EdgeConfig, *, metrics: EdgeMetrics | None = None, notifier: SystemdNotifier | None = None,
         signer: Signer | None = None, sqs: Any = None) -> Parts:
    """Build the parts; raises CredentialsMissing (auth aws_iam, empty chain) or OSError (e.g. the spool)."""
    stop = threading.Event()
    metrics = metrics or EdgeMetrics()
    region = config.signing_region()
    if signer is None and config.endpoint.auth == "aws_iam":
        signer = Signer(region or "")  # CredentialsMissing when the chain is empty

    def upload_error(kind: str) -> None:
        metrics.upload_errors.labels(kind=kind).inc()

    uploader = Uploader(config.endpoint, config.device_id, config.responses.reply_to, stop, signer, upload_error)
    in_flight = InFlight(config.throttle.max_in_flight)
    spool = Spool(config.spool.directory, int(config.spool.max_bytes))
    pending = PendingRequests()
    sqs = sqs or make_sqs_client(config.responses, region)
    # Last: the outputs start threads (webhook, MQTT), so everything that can refuse to start comes first.
    presence = Presence(config.presence, config.device_id)
    outputs = Outputs(config.outputs, config.device_id, metrics, presence)
    status = LiveStatus()
    answers = AnswerHandler(in_flight, metrics, outputs, Tracker(config.events, config.device_id), status, presence)
    correlator = Correlator(config.responses, config.device_id, sqs, pending, answers.correlator_events())
    presence.start(answers.open_tracks)
    return Parts(
        config=config, stop=stop, metrics=metrics, notifier=notifier or SystemdNotifier(),
        camera=Camera(config.camera, stop), in_flight=in_flight,
        throttle=Throttle(config.throttle, in_flight, answers.tracking),  # keep-alive: is anyone tracked?
        spool=spool, pending=pending, delivery=Delivery(config, stop, uploader, in_flight, spool, pending, metrics),
        outputs=outputs, presence=presence, status=status, answers=answers, correlator=correlator,
    )
