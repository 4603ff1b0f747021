"""A local Lambda worker process: `python -m cloud.emulator.worker <LogicalId> <handler>`.

The logical ID (DetectionFunction, RecognitionFunction) is there only to name the process, so `ps`
tells the functions' workers apart; the rest is Lambda's own runtime interface client, awslambdaric,
run in this process exactly as the base image's entry point runs it (`python -m awslambdaric <handler>`),
against the Runtime API in AWS_LAMBDA_RUNTIME_API.
"""

from __future__ import annotations

import sys

from awslambdaric.__main__ import main as run_runtime_client


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit("usage: python -m cloud.emulator.worker <LogicalId> <module.handler>")
    run_runtime_client([argv[0], argv[2]])


if __name__ == "__main__":
    main(sys.argv)
