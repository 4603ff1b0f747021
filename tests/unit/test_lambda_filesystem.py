"""Lambda's filesystem is read-only except /tmp: both handlers, in a fresh process with the image's ENV (its
/tmp mapped to a test directory, which is also TMPDIR; its ONNX engine on the exported networks), import, build
their models and answer the sample events against a real moto server, while an audit hook records every write
outside that directory. There must be none. A second test shows the hook does catch such writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.functions import aws
from cloud.functions.detection.detector import Detector
from cloud.functions.recognition.embedder import Embedder
from tests.dockerfile import dockerfile_env
from tests.moto_env import REGION, moto_server, point_boto3_at
from tests.photos import REPO
from tests.sample_events import FUNCTION_URL_EVENT, SQS_BATCH_EVENT, Backend, create_backend, stock

# Runs in the subprocess: the hook first, then everything a Lambda container does for one call of each.
PROBE = textwrap.dedent("""
    import json, os, sys
    from tests.write_audit import install
    writes = install([os.environ["TMPDIR"]])
    from cloud.functions.detection import handler as detection  # in Lambda (AWS_LAMBDA_FUNCTION_NAME) ...
    from cloud.functions.recognition import handler as recognition  # ... import builds the models: the init phase
    detected = detection.handler(json.load(open(sys.argv[1])), None)
    recognised = recognition.handler(json.load(open(sys.argv[2])), None)
    print(json.dumps({"writes": writes, "detection": detected["statusCode"], "recognition": recognised}))
""")


def _image_env(tmp: Path) -> dict[str, str]:
    """The image's ENV with its /tmp moved to `tmp`, and what Lambda adds; no HOME (Lambda sets none)."""
    env = {key: str(tmp) + value[len("/tmp"):] if value == "/tmp" or value.startswith("/tmp/") else value
           for key, value in dockerfile_env().items()}
    passed = {key: value for key, value in os.environ.items() if key == "PATH" or key.startswith("OPENBLAS_")}
    return {**passed, **env, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8",
            "AWS_LAMBDA_FUNCTION_NAME": "facepipe-filesystem-probe"}


def _probe(code: str, env: dict[str, str], *args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def backend(onnx_models: Path) -> Iterator[tuple[Backend, dict[str, str]]]:
    """A stocked backend on a moto server, and the AWS_* variables that reach it."""
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        aws_env: dict[str, str] = {}
        point_boto3_at(endpoint, aws_env.__setitem__, REGION)
        for name, value in aws_env.items():
            mp.setenv(name, value)
        aws.client.cache_clear()
        created = create_backend(onnx_models)
        onnx = {"engine": "onnx", "models_dir": onnx_models}  # the handlers' engine (create_backend)
        stock(created, Detector(**onnx), Embedder(**onnx))
        yield created, aws_env
    aws.client.cache_clear()


def test_handlers_write_nothing_outside_tmp(backend: tuple[Backend, dict[str, str]], tmp_path: Path) -> None:
    created, aws_env = backend
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = _image_env(tmp) | aws_env | created.env  # FACEPIPE_MODELS_DIR: the real networks, not the image's

    report = _probe(PROBE, env, str(FUNCTION_URL_EVENT), str(SQS_BATCH_EVENT))

    assert report["writes"] == []
    # ... and both handlers did their whole job
    assert report["detection"] == 202 and report["recognition"] == {"batchItemFailures": []}
    sqs = aws.client("sqs")
    assert sqs.receive_message(QueueUrl=created.request_queue_url).get("Messages")
    assert sqs.receive_message(QueueUrl=created.response_queue_url).get("Messages")


def test_the_audit_hook_catches_writes_outside(tmp_path: Path) -> None:
    allowed, elsewhere = tmp_path / "tmp", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (elsewhere / "existing").write_text("x")
    code = textwrap.dedent("""
        import json, os, pathlib, shutil, sys, tempfile
        from tests.write_audit import install
        writes = install([os.environ["TMPDIR"]])
        inside, out = pathlib.Path(os.environ["TMPDIR"]), pathlib.Path(sys.argv[1])
        # allowed: anything under TMPDIR, reading anywhere, /dev/null
        (inside / "a.txt").write_text("ok"); os.mkdir(inside / "d"); shutil.rmtree(inside / "d")
        tempfile.TemporaryDirectory().cleanup(); (out / "existing").read_text()
        open(os.devnull, "w").close()
        # not allowed
        (out / "b.txt").write_text("no")
        with open(out / "existing", "a"): pass
        os.close(os.open(out / "c", os.O_CREAT | os.O_WRONLY))
        os.mkdir(out / "d"); os.rename(out / "b.txt", out / "e.txt"); os.replace(out / "e.txt", out / "f.txt")
        os.remove(out / "f.txt"); os.chmod(out / "c", 0o600); shutil.rmtree(out / "d")
        os.makedirs(out / "x" / "y")
        print(json.dumps({"writes": writes}))
    """)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "TMPDIR": str(allowed)}

    report = _probe(code, env, str(elsewhere))

    out = str(elsewhere.resolve())
    assert report["writes"] == [
        f"open {out}/b.txt", f"open {out}/existing", f"open {out}/c", f"os.mkdir {out}/d",
        f"os.rename {out}/b.txt", f"os.rename {out}/e.txt", f"os.rename {out}/e.txt", f"os.rename {out}/f.txt",
        f"os.remove {out}/f.txt", f"os.chmod {out}/c", f"shutil.rmtree {out}/d", f"os.rmdir {out}/d",
        f"os.mkdir {out}/x", f"os.mkdir {out}/x/y",
    ]
