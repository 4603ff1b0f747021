"""`facepipe`: admin and local-stack command line.

Each subcommand lives in the module that does the work; that module exposes an
`add_arguments(parser)`-style function and a `run(args) -> int`-style function, and imports torch
only inside the run function, so `facepipe --help` stays fast and works without the cloud extra.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command path, module, argument function, run function, help)
_COMMANDS: list[tuple[tuple[str, ...], str, str, str, str]] = [
    (("local", "up"), "cloud.local.up", "add_arguments", "run",
     "run the whole backend on 127.0.0.1 (template.yaml's queues and bucket in moto, Function URL, SQS trigger, "
     "each function as Lambda-like worker processes)"),
    (("enroll",), "cloud.enrollment", "add_arguments", "run",
     "detect, embed and add people's faces to the gallery"),
    (("gallery", "list"), "cloud.gallery_cli", "add_list_arguments", "run_list", "list enrolled names"),
    (("gallery", "remove"), "cloud.gallery_cli", "add_remove_arguments", "run_remove",
     "remove a name from the gallery"),
    (("submit",), "cloud.submit", "add_arguments", "run",
     "send photos or a video's frames through the URL, the ingest queue or S3, and collect every answer"),
    (("bench",), "cloud.bench.cli", "add_arguments", "run",
     "raw models vs. the pipeline on the same frames, a burst, a paced client, cold starts, an AWS cost model"),
    (("models", "prepare"), "cloud.models.prepare", "add_arguments", "run",
     "build the InceptionResnetV1 weights file offline, then export the ONNX networks"),
    (("models", "export"), "cloud.models.export", "add_arguments", "run",
     "export MTCNN and InceptionResnetV1 to ONNX files, each checked against torch"),
    (("models", "fetch"), "cloud.models.fetch", "add_arguments", "run",
     "download an InceptionResnetV1 state_dict pinned by its sha256"),
    (("dlq", "list"), "cloud.dlq", "add_list_arguments", "run_list",
     "list a dead-letter queue's messages (request id, device, receives, why) without consuming them"),
    (("dlq", "redrive"), "cloud.dlq", "add_redrive_arguments", "run_redrive",
     "move a dead-letter queue's messages back to their queue"),
    (("device", "add"), "cloud.devices", "add_add_arguments", "run_add",
     "a camera's own IAM user, access key and response queue; prints its edge.yaml lines"),
    (("device", "list"), "cloud.devices", "add_list_arguments", "run_list", "list the stack's devices"),
    (("device", "remove"), "cloud.devices", "add_remove_arguments", "run_remove",
     "delete a device's access keys, policy, IAM user and response queue"),
    (("faces", "serve"), "cloud.faces.page", "add_arguments", "run",
     "the faces library page on 127.0.0.1: recent faces, unknown groups, people; assign, wrong, forget"),
    (("faces", "list"), "cloud.faces.cli", "add_list_arguments", "run_list",
     "recent faces (newest first) with camera, time, name, distance and key; --groups: unknown faces grouped"),
    (("faces", "assign"), "cloud.faces.cli", "add_assign_arguments", "run_assign",
     "enroll faces as a person (new or existing): recognised from the next batch on"),
    (("faces", "wrong"), "cloud.faces.cli", "add_wrong_arguments", "run_wrong",
     "this is not <name>: out of their enrollment, kept as a negative their matches are checked against"),
    (("faces", "delete"), "cloud.faces.cli", "add_delete_arguments", "run_delete", "delete face records"),
    (("faces", "people"), "cloud.faces.cli", "add_people_arguments", "run_people",
     "enrolled people: enrollment faces, negatives, last seen"),
    (("faces", "rename"), "cloud.faces.cli", "add_rename_arguments", "run_rename", "rename a person"),
    (("faces", "unenroll"), "cloud.faces.cli", "add_unenroll_arguments", "run_unenroll",
     "remove one enrollment face of a person"),
    (("faces", "forget"), "cloud.faces.cli", "add_forget_arguments", "run_forget",
     "delete everything about a person (gallery, enrollment crops, faces, results), with counts"),
]

_GROUP_HELP = {
    "local": "the local stack",
    "gallery": "inspect and edit the enrolled gallery",
    "models": "model weights and their ONNX exports",
    "dlq": "the request, response and ingest dead-letter queues",
    "device": "cameras as IAM identities, each with its own response queue",
    "faces": "the faces library: review recent faces, name unknown ones, fix wrong ones, forget people",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only the module of the command named in `argv` is imported: the others stay unloaded."""
    parser = argparse.ArgumentParser(prog="facepipe", description=__doc__.splitlines()[0])
    root = parser.add_subparsers(dest="command", required=True)
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): root}
    for path, module_name, add_name, run_name, help_text in _COMMANDS:
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in groups:
                group_parser = groups[prefix[:-1]].add_parser(prefix[-1], help=_GROUP_HELP[prefix[-1]])
                groups[prefix] = group_parser.add_subparsers(dest=f"command_{depth}", required=True)
        sub = groups[path[:-1]].add_parser(path[-1], help=help_text, description=help_text)
        if argv[: len(path)] == list(path):
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:  # e.g. `models`/`local` in the Lambda image, which ships neither
                if exc.name is None or not module_name.startswith(exc.name):
                    raise  # a third-party package missing: its own message says which
                parser.error(f"'{' '.join(path)}' is not part of this installation (the Lambda image has only "
                             f"the functions, `enroll` and `gallery`); run it from a full install")
            getattr(module, add_name)(sub)
            sub.set_defaults(_run=getattr(module, run_name))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: each command's own clean-up (with, finally) has run on the way out
        print(f"facepipe {' '.join(argv[:1])}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
