"""`facepipe-edge`: run the daemon, check its configuration and dependencies, or forget removed people.

Exit status: 0 ok; 78 (EX_CONFIG) for a bad configuration, missing credentials or a broken AWS
profile, so systemd's `RestartPreventExitStatus=78` stops a restart loop; 1 when `check` finds a
dependency failing or the daemon cannot start for another reason. Errors are one line on stderr (a bad config: one
line per problem), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from types import FrameType

from edge_client.config import EX_CONFIG, ConfigError, EdgeConfig, load_config
from edge_client.redact import redact_url, scrub

DEFAULT_CONFIG = os.environ.get("FACEPIPE_EDGE_CONFIG", "/etc/facepipe/edge.yaml")
EX_FAILURE = 1


def _fail(message: str, status: int) -> int:
    for line in message.splitlines():  # a config error: one line per problem
        print(f"facepipe-edge: {line}", file=sys.stderr)
    return status


def _run(config: EdgeConfig) -> int:
    import cv2
    from botocore.exceptions import BotoCoreError

    from edge_client.daemon import Daemon
    from edge_client.metrics import format_summary
    from edge_client.spool import SpoolInUse
    from edge_client.uploader import CredentialsMissing

    # OpenCV's worker pool wakes (and spins) for every small resize/blur: on the daemon's 160-px motion
    # frames that costs more CPU than it saves (measured: motion check +0.95 ms/frame -> +0.34 ms).
    cv2.setNumThreads(1)

    try:
        daemon = Daemon(config)
    except CredentialsMissing as exc:
        return _fail(str(exc), EX_CONFIG)
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a missing profile: restarting cannot fix it
        return _fail(f"AWS configuration: {exc}", EX_CONFIG)
    except SpoolInUse as exc:  # two daemons configured with one spool: restarting cannot fix it either
        return _fail(str(exc), EX_CONFIG)
    except OSError as exc:  # e.g. spool directory not writable
        return _fail(f"cannot start: {exc}", EX_FAILURE)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("%s received: stopping", signal.Signals(signum).name)
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = daemon.run()
    print(format_summary(daemon.summary()), flush=True)
    return status


def _check_camera(config: EdgeConfig) -> str:
    from edge_client.camera import open_reader

    reader = open_reader(config.camera)
    try:
        image = reader.read()
    finally:
        reader.close()
    if image is None:
        raise OSError("opened but delivered no frame")
    return f"{redact_url(config.camera.source)!r} delivers {image.shape[1]}x{image.shape[0]} frames"


def _check_endpoint(config: EdgeConfig) -> str:
    import threading

    from edge_client.uploader import Signer, Uploader

    signer = Signer(config.signing_region() or "") if config.endpoint.auth == "aws_iam" else None
    uploader = Uploader(config.endpoint, config.device_id, None, threading.Event(), signer)
    ok, detail = uploader.probe()
    if not ok:
        raise OSError(f"{redact_url(config.endpoint.url)}: {detail}")
    return f"{redact_url(config.endpoint.url)} answers ({detail}, {'signed' if signer else 'unsigned'})"


def _check_queue(config: EdgeConfig) -> str:
    from edge_client.correlator import make_sqs_client

    sqs = make_sqs_client(config.responses, config.signing_region())
    attributes = sqs.get_queue_attributes(
        QueueUrl=config.responses.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return f"{config.responses.queue_url} reachable ({attributes.get('ApproximateNumberOfMessages', '?')} waiting)"


def _check_spool(config: EdgeConfig) -> str:
    directory = config.spool.directory
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-"):
        pass
    frames = len(list(directory.glob("*.frame")))
    return f"{directory} writable ({frames} frame(s) spooled)"


def _urls(config: EdgeConfig) -> tuple[object, ...]:
    """Configured URLs whose credentials or query must not reach the output."""
    return (config.camera.source, config.endpoint.url, config.outputs.webhook.url)


def _check(config: EdgeConfig) -> int:
    checks: list[tuple[str, Callable[[EdgeConfig], str]]] = [
        ("camera", _check_camera), ("endpoint", _check_endpoint),
        ("response queue", _check_queue), ("spool", _check_spool),
    ]
    print(f"config: ok ({config.device_id})")
    failed = 0
    for name, check in checks:
        try:
            print(f"{name}: ok: {check(config)}", flush=True)
        except Exception as exc:  # each dependency gets one line, whatever went wrong
            failed += 1
            detail = " ".join(scrub(str(exc), *_urls(config)).split()) or type(exc).__name__
            print(f"{name}: FAILED: {detail}", flush=True)
    return EX_FAILURE if failed else 0


def _forget(config: EdgeConfig, names: list[str]) -> int:
    from edge_client.forget import forget

    if not config.outputs.mqtt.host:
        return _fail("forget: outputs.mqtt.host is not set: presence lives on the MQTT broker", EX_CONFIG)
    try:
        lines = forget(config.outputs.mqtt, config.device_id, names)
    except ValueError as exc:  # a name refused: nothing was sent
        return _fail(f"forget: {exc}", EX_CONFIG)
    except (OSError, TimeoutError) as exc:
        return _fail(f"forget: broker {config.outputs.mqtt.host}:{config.outputs.mqtt.port}: {exc}", EX_FAILURE)
    for line in lines:
        print(line, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facepipe-edge", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run the daemon"),
                            ("check", "validate the config and try the camera, endpoint, queue and spool"),
                            ("forget", "remove people (gone from the gallery) from presence and Home Assistant")):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", default=DEFAULT_CONFIG,
                         help=f"YAML config (default $FACEPIPE_EDGE_CONFIG or {DEFAULT_CONFIG})")
        if name == "forget":
            sub.add_argument("names", nargs="+", metavar="NAME", help="a name as enrolled")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc), EX_CONFIG)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # botocore says "Found credentials in ..." once per client at INFO, and dumps every request at DEBUG.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # urllib3 logs each request line at DEBUG: a webhook's path and query are its secret.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if args.command == "check":
        return _check(config)
    if args.command == "forget":
        return _forget(config, args.names)
    return _run(config)


if __name__ == "__main__":
    sys.exit(main())
