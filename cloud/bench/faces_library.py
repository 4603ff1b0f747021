"""The faces library's two figures (docs/bench.md "Faces library"):

1. listing: `store.list_records` (what the page and `facepipe faces list` do: list the keys, then GET every record,
   GET_THREADS at once) over N stored face records in moto's S3 server on loopback, median of `--rounds`; then
   grouping the unknown ones (clusters.py) and rendering the page (view.py) on the same records. Each record is the
   size the recognizer writes (a real 160x160 crop inside, ~12 KB of JSON).
2. assign -> first frame named, on the local stack (real functions, ONNX engine): for each of `--people` shared
   identities never enrolled, a frame of photo 1 is answered unknown; the operator assigns its face
   (`Library.assign`); then a frame of photo 2 is sent and answered. The figure is from the start of assign to
   that answer (assign's own time, then the frame's upload-to-answer). The local stack's workers recheck the
   gallery every batch; a deployment rechecks every FACEPIPE_GALLERY_REFRESH_S (30 s by default), which adds up to
   that much on AWS.
Run: `python -m cloud.bench.faces_library [--records 1000] [--people 3] [--models-dir .cache/models]`.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def listing(records: int, rounds: int) -> dict[str, float]:
    from PIL import Image

    from cloud.emulator.moto_server import MotoServer
    from cloud.functions import aws
    from cloud.functions.detection.detector import Detector
    from cloud.functions.images import encode_jpeg
    from cloud.functions.recognition.face_records import FaceRecord, keep_faces
    from cloud.operator.faces import store
    from cloud.operator.faces.actions import Library
    from cloud.operator.faces.view import Filters, page
    from tests.photos import packaged

    moto = MotoServer()
    endpoint = moto.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1")
    aws.client.cache_clear()
    try:
        bucket = "faces-bench"
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        [face] = Detector(engine="torch").detect(Image.open(packaged("face_recognition/obama2.jpg")).convert("RGB"))
        crop = base64.b64encode(encode_jpeg(face.crop)).decode()
        rng = np.random.default_rng(0)
        now = time.time()
        made = []
        for i in range(records):
            embedding = rng.standard_normal(512).astype(np.float32)
            made.append(FaceRecord(
                request_id=str(uuid.uuid4()), device_id=f"cam{i % 4}", index=0, detected_at=now - i,
                name="unknown" if i % 2 else f"person{i % 10}", distance=0.9, box=[1, 2, 3, 4], probability=0.99,
                model="bench", embedding_b64=base64.b64encode((embedding / np.linalg.norm(embedding)).tobytes()
                                                              ).decode(), crop_jpeg_b64=crop))
        started = time.perf_counter()
        keep_faces(bucket, made)
        write_s = time.perf_counter() - started
        size = len(made[0].model_dump_json())
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            listed = store.list_records(bucket)
            times.append(time.perf_counter() - started)
            assert len(listed) == records
        # The page's library keeps what it read: a reload lists the keys and reads only new records.
        library = Library(bucket, f"s3://{bucket}/gallery/gallery.npz", 1.02, "bench")
        library.recent(2)
        keep_faces(bucket, [r.model_copy(update={"request_id": str(uuid.uuid4())}) for r in made[:10]])  # ten new
        started = time.perf_counter()
        assert len(library.recent(2)) == records + 10
        reload_s = time.perf_counter() - started
        started = time.perf_counter()
        groups = library.unknown_groups(listed)
        group_s = time.perf_counter() - started
        started = time.perf_counter()
        # the newest MAX_ROWS rows and MAX_GROUPS groups
        html = page(faces=listed, groups=groups, people=[], retention={}, filters=Filters(), csrf="x", message="",
                    bucket=bucket)
        render_s = time.perf_counter() - started
        return {"reload_s": reload_s, "records": records, "record_bytes": size, "write_s": write_s,
                "list_s": statistics.median(times),
                "faces_per_s": records / statistics.median(times), "group_s": group_s, "groups": len(groups),
                "render_s": render_s, "page_mb": len(html) / 1e6}
    finally:
        moto.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        aws.client.cache_clear()


def assign_to_named(people: int, models_dir: Path) -> list[dict[str, Any]]:
    from cloud.emulator.stack import LocalStack, StackConfig
    from cloud.functions.contracts import HEADER_REPLY_TO
    from cloud.operator.faces.actions import Library
    from tests.conftest import Mailbox, post_frame
    from tests.photos import SHARED

    chosen = [p for p in sorted((SHARED / "identities").iterdir())
              if (p / "1.jpg").is_file() and (p / "2.jpg").is_file()
              and p.name not in ("barack_obama", "joe_biden")][:people]
    figures = []
    log = Path(tempfile.mkdtemp()) / "functions.log"  # the functions' JSON logs, out of the figures' way
    with LocalStack(StackConfig(models_dir=models_dir, function_log=log)) as stack:
        sqs = stack.client("sqs")
        queue = sqs.create_queue(QueueName=f"{stack.reply_to_prefix}bench")["QueueUrl"]
        mailbox = Mailbox(sqs, queue)
        library = Library(stack.bucket, stack.gallery_uri, 1.02, "bench")

        def answer(photo: Path) -> tuple[dict[str, Any], float]:
            request_id, started = str(uuid.uuid4()), time.perf_counter()
            reply = post_frame(stack, photo.read_bytes(), request_id=request_id, device_id="bench-cam",
                               headers={HEADER_REPLY_TO: queue.rsplit("/", 1)[1]})
            assert reply.status_code == 202, reply.text
            return mailbox.wait_for(request_id, 90), time.perf_counter() - started

        stack.enroll({"barack_obama": [SHARED / "identities/barack_obama/1.jpg"]})  # a gallery to add to
        for person in chosen:
            first, _ = answer(person / "1.jpg")
            if [f["name"] for f in first["faces"]] != ["unknown"]:
                continue
            [stored] = [s for s in library.recent(1, device="bench-cam") if s.record.request_id == first["request_id"]]
            started = time.perf_counter()
            library.assign([stored.key], person.name)
            assign_s = time.perf_counter() - started
            named, frame_s = answer(person / "2.jpg")
            figures.append({"person": person.name, "assign_s": assign_s, "frame_s": frame_s,
                            "total_s": time.perf_counter() - started,
                            "answered": [f["name"] for f in named["faces"]]})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    figures = listing(args.records, args.rounds)
    print(f"listing: {figures['records']} face records of {figures['record_bytes']} bytes in moto's S3 "
          f"(written in {figures['write_s']:.2f} s by the recognizer's writer): listed and read in "
          f"{figures['list_s']:.2f} s = {figures['faces_per_s']:.0f} faces/s (median of {args.rounds}); the page's "
          f"reload with 10 new: {figures['reload_s']:.2f} s; "
          f"{figures['groups']} unknown groups in {figures['group_s']:.2f} s; page rendered in "
          f"{figures['render_s']:.2f} s ({figures['page_mb']:.1f} MB)")
    for row in assign_to_named(args.people, args.models_dir):
        print(f"assign -> first frame named, {row['person']}: {row['total_s']:.2f} s (assign {row['assign_s']:.2f} s, "
              f"then the frame's upload to answer {row['frame_s']:.2f} s), answered {row['answered']}")


if __name__ == "__main__":
    main()
