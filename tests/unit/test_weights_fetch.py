"""`facepipe models fetch` on the real prepared weights (file://) and on a facenet-pytorch-style release file
(legacy torch format, with a `logits.*` classifier head) served over HTTP on 127.0.0.1; wrong pins, files that
are not weights and oversized downloads fail with one line and leave nothing behind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud.functions.recognition.embedder import Embedder
from cloud.operator import cli
from cloud.operator.models import fetch, prepare
from cloud.operator.models.sidecar import sidecar_path
from tests.http_server import serving
from tests.photos import packaged, weights_path

VGGFACE2_CLASSES = 8631  # the size of facenet-pytorch's VGGFace2 classifier head


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@pytest.fixture(scope="module")
def weights_sha256() -> str:
    return _sha256(weights_path())


def _fetch(url: str, sha256: str, out: Path, *extra: str) -> int:
    return cli.main(["models", "fetch", "--url", url, "--sha256", sha256, "--out", str(out), *extra])


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("facepipe models fetch: error: ") and err.count("\n") == 1, err
    return err


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keeps stderr for the command's own line
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, directory): a plain HTTP server on 127.0.0.1 serving the directory."""
    root = tmp_path_factory.mktemp("served")
    with serving(functools.partial(_Quiet, directory=str(root))) as url:
        yield url, root


def test_fetches_the_real_weights_byte_for_byte(
    tmp_path: Path, weights_sha256: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models" / "w.pt"
    assert _fetch(weights_path().as_uri(), weights_sha256, out) == 0
    assert _sha256(out) == weights_sha256 and out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["w.pt", "w.pt.json"]  # no temporary left behind
    record = json.loads(sidecar_path(out).read_text())
    assert record["sha256"] == weights_sha256 and record["source"] == {"url": weights_path().as_uri(),
                                                                       "sha256": weights_sha256}
    assert record["size_bytes"] == out.stat().st_size and record["ignored_keys"] == []
    assert record["keys"] == json.loads(sidecar_path(weights_path()).read_text())["keys"]
    assert record["model_tag"] == Embedder(out).model_tag == f"inception_resnet_v1:{weights_sha256[:16]}"
    assert "calibrate_threshold" in capsys.readouterr().out  # other weights need their own threshold
    # the sidecar is the one `prepare` reads: the second run finds the file up to date
    assert prepare.is_up_to_date(out)
    assert _fetch(weights_path().as_uri(), weights_sha256, out) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.fixture(scope="module")
def release_file(served: tuple[str, Path]) -> tuple[str, str]:
    """Our weights saved as facenet-pytorch's release files are: torch's legacy format, with a classifier
    head (logits.*) next to the embedding layers. Returns (URL, sha256)."""
    base, root = served
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["logits.weight"] = torch.randn(VGGFACE2_CLASSES, 512, generator=generator) * 0.01
    state["logits.bias"] = torch.zeros(VGGFACE2_CLASSES)
    path = root / "20180402-114759-release-style.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return f"{base}/{path.name}", _sha256(path)


def test_a_release_file_with_a_classifier_head_embeds_like_the_head_free_weights(
    tmp_path: Path, release_file: tuple[str, str]
) -> None:
    url, sha256 = release_file
    out = tmp_path / "w.pt"
    assert _fetch(f"{url}?token=not-for-the-sidecar", sha256, out, "--name", "release-style") == 0
    record = json.loads(sidecar_path(out).read_text())
    assert record["ignored_keys"] == ["logits.bias", "logits.weight"] and record["weights"] == "release-style"
    assert record["source"]["url"] == url  # the query (a token, say) is not baked into the image
    # the head changes nothing: the same face gives the same embedding as with the original file
    crops, _ = prepare.face_crops([packaged("face_recognition/obama.jpg")], limit=1)
    assert np.array_equal(Embedder(out).embed(crops), Embedder(weights_path()).embed(crops))


def test_a_wrong_sha256_writes_nothing(
    tmp_path: Path, weights_sha256: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = ("0" if weights_sha256[0] != "0" else "1") + weights_sha256[1:]
    out = tmp_path / "w.pt"
    assert _fetch(weights_path().as_uri(), wrong, out) == 1
    err = _one_line_error(capsys)
    assert f"has sha256 {weights_sha256}, not the pinned {wrong}; nothing written" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["a photo", "another model's state_dict"])
def test_a_file_that_is_not_the_weights_writes_nothing(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    if kind == "a photo":
        source.write_bytes(packaged("face_recognition/biden.jpg").read_bytes())
        expected = "the download is not a torch state_dict"
    else:
        torch.save(torch.nn.Linear(512, 10).state_dict(), source)
        expected = "the download is not an InceptionResnetV1 state_dict"
    out = tmp_path / "out" / "w.pt"
    assert _fetch(source.as_uri(), _sha256(source), out) == 1
    assert expected in _one_line_error(capsys)
    assert list(out.parent.iterdir()) == []


def test_downloads_over_the_size_cap_stop(
    tmp_path: Path, served: tuple[str, Path], weights_sha256: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.pt"
    # over HTTP the declared length is refused before reading; file:// is counted while reading
    base, root = served
    (root / "big.bin").write_bytes(b"x" * 5000)
    assert _fetch(f"{base}/big.bin", weights_sha256, out, "--max-bytes", "1000") == 1
    assert "is 5000 bytes, over the 1000-byte limit" in _one_line_error(capsys)
    assert _fetch(weights_path().as_uri(), weights_sha256, out, "--max-bytes", "1000000") == 1
    assert "over the 1000000-byte limit" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_and_unreachable_urls_are_one_line_errors(
    tmp_path: Path, served: tuple[str, Path], weights_sha256: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.pt"
    assert _fetch(weights_path().as_uri(), "not-a-digest", out) == 1
    assert "--sha256 must be 64 hex digits" in _one_line_error(capsys)
    assert _fetch("ftp://example.invalid/w.pt", weights_sha256, out) == 1
    assert "only https, http, file URLs" in _one_line_error(capsys)
    assert _fetch(f"{served[0]}/missing.pt", weights_sha256, out) == 1
    assert "HTTP 404" in _one_line_error(capsys)
    assert not out.exists()


def test_public_url_drops_credentials_query_and_fragment() -> None:
    assert fetch.public_url("https://user:secret@host.example:8443/a/w.pt?X-Amz-Signature=s#f") == (
        "https://host.example:8443/a/w.pt")
