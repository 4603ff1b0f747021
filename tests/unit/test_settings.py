"""Handler settings refuse values that cannot work, at start-up rather than on the first request."""

from __future__ import annotations

import os
import re

import pytest
from pydantic import ValidationError

from cloud.functions.contracts import MAX_FACES_PER_FRAME
from cloud.functions.settings import Settings, default_threads, get_settings


@pytest.mark.parametrize("prefix", ["", "facepipe-reply-", "a" * 80])
def test_reply_to_prefix_is_empty_or_a_queue_name(prefix: str) -> None:
    assert Settings(reply_to_prefix=prefix).reply_to_prefix == prefix


@pytest.mark.parametrize("prefix", ["https://sqs.example/123/facepipe-", "two words", "a" * 81, "arn:aws:sqs:x"])
def test_reply_to_prefix_that_no_queue_name_could_start_with_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="reply_to_prefix"):
        Settings(reply_to_prefix=prefix)


@pytest.mark.parametrize(("memory_mb", "cpus", "threads"), [
    (128, 2, 1),  # a fraction of a vCPU: one thread, never zero
    (2048, 2, 1),  # 1.16 vCPU (the detection default)
    (3008, 2, 2),  # 1.70 vCPU (the recognition default)
    (5307, 4, 3),  # 3 x 1769
    (10240, 6, 6),  # Lambda's largest: 6 vCPUs
    (10240, 4, 4),  # never more than the machine shows
    (None, 8, 2),  # not in Lambda: 2, as before
    (None, 1, 1),
    (3008, None, 1),  # os.cpu_count() unknown
])
def test_default_threads_follow_the_lambda_vcpu_share(
    memory_mb: int | None, cpus: int | None, threads: int
) -> None:
    assert default_threads(memory_mb, cpus) == threads


def test_threads_default_reads_the_function_memory_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACEPIPE_THREADS", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    assert Settings().threads == 1
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    assert Settings().threads == min(6, os.cpu_count() or 1)
    monkeypatch.setenv("FACEPIPE_THREADS", "3")
    assert Settings().threads == 3


def test_face_limit_stays_within_the_contract() -> None:
    assert 1 <= Settings().max_faces <= MAX_FACES_PER_FRAME
    assert Settings(max_faces=MAX_FACES_PER_FRAME).max_faces == MAX_FACES_PER_FRAME
    with pytest.raises(ValidationError, match="max_faces"):
        Settings(max_faces=MAX_FACES_PER_FRAME + 1)
    with pytest.raises(ValidationError, match="embed_chunk"):
        Settings(embed_chunk=0)


def test_the_functions_default_to_onnx_and_without_a_models_dir_name_the_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloud.functions.detection import handler as detection
    from cloud.functions.recognition import handler as recognition

    monkeypatch.delenv("FACEPIPE_ENGINE", raising=False)
    monkeypatch.delenv("FACEPIPE_MODELS_DIR", raising=False)
    get_settings.cache_clear()
    detection.get_detector.cache_clear()
    recognition.reset_caches()
    reason = re.escape("engine onnx needs FACEPIPE_MODELS_DIR, the folder of the exported .onnx networks: "
                       "`facepipe models export --models-dir DIR` (or `make models`) writes them")
    try:
        assert get_settings().engine == "onnx"
        with pytest.raises(ValueError, match=f"^{reason}$"):
            detection.get_detector()
        with pytest.raises(ValueError, match=f"^{reason}$"):
            recognition.get_container()
    finally:
        detection.get_detector.cache_clear()
        recognition.reset_caches()
