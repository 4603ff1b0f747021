"""`facepipe submit` through each door on the shared identities: throughput and latency, side by side.

Starts the local stack in this process (with its ingest door), enrolls every shared
identity's 1.jpg, then submits the folder of their 2.jpg through the URL, the ingest queue and S3 in turn
(`--rounds` times each) and prints each run's summary. Run: `python -m cloud.bench.submit_doors`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cloud.emulator.stack import LocalStack, StackConfig
from cloud.operator.submit import Door, collect_inputs, submit, target_from_env
from tests.photos import SHARED, weights_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    people = {p.name: [p / "1.jpg"] for p in sorted((SHARED / "identities").iterdir()) if p.is_dir()}
    with LocalStack(StackConfig(weights_path=weights_path())) as stack, tempfile.TemporaryDirectory() as folder:
        stack.enroll(people)
        for name, photos in people.items():
            if (photos[0].parent / "2.jpg").is_file():
                (Path(folder) / f"{name}.jpg").symlink_to(photos[0].parent / "2.jpg")
        inputs = collect_inputs([Path(folder)], every=1)
        target = target_from_env(stack.client_env())
        doors: list[Door] = ["url", "queue", "s3"]
        for round_ in range(args.rounds):
            for via in doors:
                report = submit(inputs, target, via, concurrency=args.concurrency, progress=False)
                s = report.summary()
                right = sum(Path(r["path"]).stem == r["result"] for r in report.rows)
                print(f"round {round_ + 1} --via {via:5} {len(inputs)} photos: answered {s['answered']}, "
                      f"named right {right}; {s['answers_per_s']} answers/s over {s['wall_s']} s; latency ms "
                      f"mean {s['latency_ms']['mean']}, p50 {s['latency_ms']['p50']}, p95 {s['latency_ms']['p95']}",
                      flush=True)


if __name__ == "__main__":
    main()
