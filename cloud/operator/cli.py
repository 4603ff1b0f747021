"""`facepipe`: the operator's command line.

The local stack, devices, dead letters, submitting, benchmarks, model weights and their export, and the image's
own `enroll` and `gallery` (cloud/functions/commands.py).

Each subcommand lives in the module that does the work; only the module of the command being run is imported,
so `facepipe --help` stays fast and works without the cloud extra.
"""

from __future__ import annotations

import argparse
import sys

from cloud.functions.commands import IMAGE_COMMANDS, IMAGE_GROUPS, Command, build_parser, run_command_line

_COMMANDS: list[Command] = [
    Command(("local", "up"), "cloud.emulator.up", "add_arguments", "run",
            "run the whole backend on 127.0.0.1 (template.yaml's queues and bucket in moto, Function URL, SQS "
            "trigger, each function as Lambda-like worker processes)"),
    *IMAGE_COMMANDS,
    Command(("submit",), "cloud.operator.submit", "add_arguments", "run",
            "send photos or a video's frames through the URL, the ingest queue or S3, and collect every answer"),
    Command(("bench",), "cloud.bench.cli", "add_arguments", "run",
            "raw models vs. the pipeline on the same frames, a burst, a paced client, cold starts, an AWS cost model"),
    Command(("models", "prepare"), "cloud.operator.models.prepare", "add_arguments", "run",
            "build the InceptionResnetV1 weights file offline, then export the ONNX networks"),
    Command(("models", "export"), "cloud.operator.models.export", "add_arguments", "run",
            "export MTCNN and InceptionResnetV1 to ONNX files, each checked against torch"),
    Command(("models", "fetch"), "cloud.operator.models.fetch", "add_arguments", "run",
            "download an InceptionResnetV1 state_dict pinned by its sha256"),
    Command(("dlq", "list"), "cloud.operator.dlq", "add_list_arguments", "run_list",
            "list a dead-letter queue's messages (request id, device, receives, why) without consuming them"),
    Command(("dlq", "redrive"), "cloud.operator.dlq", "add_redrive_arguments", "run_redrive",
            "move a dead-letter queue's messages back to their queue"),
    Command(("device", "add"), "cloud.operator.devices", "add_add_arguments", "run_add",
            "a camera's own IAM user, access key and response queue; prints its edge.yaml lines"),
    Command(("device", "list"), "cloud.operator.devices", "add_list_arguments", "run_list",
            "list the stack's devices"),
    Command(("device", "remove"), "cloud.operator.devices", "add_remove_arguments", "run_remove",
            "delete a device's access keys, policy, IAM user and response queue"),
    Command(("faces", "serve"), "cloud.operator.faces.page", "add_arguments", "run",
            "the faces library page on 127.0.0.1: recent faces, unknown groups, people; assign, wrong, forget"),
    Command(("faces", "list"), "cloud.operator.faces.cli", "add_list_arguments", "run_list",
            "recent faces (newest first) with camera, time, name, distance and key; --groups: unknown faces grouped"),
    Command(("faces", "assign"), "cloud.operator.faces.cli", "add_assign_arguments", "run_assign",
            "enroll faces as a person (new or existing): recognised from the next batch on"),
    Command(("faces", "wrong"), "cloud.operator.faces.cli", "add_wrong_arguments", "run_wrong",
            "this is not <name>: out of their enrollment, kept as a negative their matches are checked against"),
    Command(("faces", "delete"), "cloud.operator.faces.cli", "add_delete_arguments", "run_delete",
            "delete face records"),
    Command(("faces", "people"), "cloud.operator.faces.cli", "add_people_arguments", "run_people",
            "enrolled people: enrollment faces, negatives, last seen"),
    Command(("faces", "rename"), "cloud.operator.faces.cli", "add_rename_arguments", "run_rename",
            "rename a person"),
    Command(("faces", "unenroll"), "cloud.operator.faces.cli", "add_unenroll_arguments", "run_unenroll",
            "remove one enrollment face of a person"),
    Command(("faces", "forget"), "cloud.operator.faces.cli", "add_forget_arguments", "run_forget",
            "delete everything about a person (gallery, enrollment crops, faces, results), with counts"),
]

_GROUPS = {
    **IMAGE_GROUPS,
    "local": "the local stack",
    "models": "model weights and their ONNX exports",
    "dlq": "the request, response and ingest dead-letter queues",
    "device": "cameras as IAM identities, each with its own response queue",
    "faces": "the faces library: review recent faces, name unknown ones, fix wrong ones, forget people",
}


def parser_for(argv: list[str]) -> argparse.ArgumentParser:
    return build_parser("facepipe", __doc__.splitlines()[0], _COMMANDS, _GROUPS, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_command_line(parser_for(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
