"""A frame through the whole local stack: signed POST -> detection -> request queue -> recognition
-> response queue, with real photos, real weights and the real handlers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cloud.functions.contracts import HEADER_REPLY_TO, ResponseMessage
from cloud.functions.recognition.gallery import load_gallery
from tests.conftest import Mailbox, post_frame
from tests.photos import SHARED, packaged, requires_shared

pytestmark = pytest.mark.slow


def send_and_receive(
    stack: Any, mailbox: Mailbox, photo: bytes, **kwargs: Any
) -> tuple[dict[str, Any], ResponseMessage]:
    request_id = str(uuid.uuid4())
    reply = post_frame(stack, photo, request_id=request_id, **kwargs)
    assert reply.status_code == 202, reply.text
    accepted = reply.json()
    assert accepted["request_id"] == request_id
    answer = ResponseMessage.model_validate(mailbox.wait_for(request_id))
    assert answer.request_id == request_id
    return accepted, answer


def test_signed_frame_is_answered_with_the_right_name(local_stack: Any, responses: Mailbox) -> None:
    # GIVEN obama.jpg and biden.jpg enrolled (the fixture) WHEN another photo of Obama is posted
    accepted, answer = send_and_receive(local_stack, responses,
                                        packaged("face_recognition/obama2.jpg").read_bytes(),
                                        device_id="porch-cam")
    # THEN the 202 counts the face and the answer names him, for this device
    assert accepted["faces"] == 1
    assert [face.name for face in answer.faces] == ["barack_obama"]
    assert answer.device_id == "porch-cam"
    assert answer.timings.detect_ms > 0 and answer.timings.recognise_ms > 0


def test_the_stack_enrolls_with_the_engine_its_functions_run(local_stack: Any, responses: Mailbox) -> None:
    # GIVEN the fixture's gallery, enrolled by the stack (LocalStack.enroll) WHEN a frame is answered
    _, answer = send_and_receive(local_stack, responses, packaged("face_recognition/biden.jpg").read_bytes())
    # THEN its probes and the gallery come from one computation: the default engine's exported network
    gallery = load_gallery(local_stack.gallery_uri)
    assert answer.model == gallery.model_tag and gallery.model_tag.startswith("inception_resnet_v1.onnx:")
    assert [face.name for face in answer.faces] == ["joe_biden"]


def test_answer_goes_to_the_named_reply_to_queue(local_stack: Any, reply_queue: str) -> None:
    mailbox = Mailbox(local_stack.client("sqs"), reply_queue)
    _, answer = send_and_receive(local_stack, mailbox, packaged("face_recognition/biden.jpg").read_bytes(),
                                 headers={HEADER_REPLY_TO: reply_queue.rsplit("/", 1)[1]})
    assert [face.name for face in answer.faces] == ["joe_biden"]


@requires_shared
def test_shared_group_photo_names_both_people(local_stack: Any, responses: Mailbox) -> None:
    _, answer = send_and_receive(local_stack, responses, (SHARED / "group/fr_two_people.jpg").read_bytes())
    assert sorted(face.name for face in answer.faces) == ["barack_obama", "joe_biden"]


@requires_shared
def test_shared_photo_of_someone_not_enrolled_is_unknown(local_stack: Any, responses: Mailbox) -> None:
    _, answer = send_and_receive(local_stack, responses,
                                 (SHARED / "identities/kit_harington/1.jpg").read_bytes())
    assert [face.name for face in answer.faces] == ["unknown"]


@requires_shared
def test_shared_second_photo_of_enrolled_person(local_stack: Any, responses: Mailbox) -> None:
    _, answer = send_and_receive(local_stack, responses, (SHARED / "identities/joe_biden/2.jpg").read_bytes())
    assert [face.name for face in answer.faces] == ["joe_biden"]


@requires_shared
def test_photo_without_faces_still_gets_an_answer(local_stack: Any, responses: Mailbox) -> None:
    accepted, answer = send_and_receive(local_stack, responses,
                                        (SHARED / "noface/skimage_coffee.jpg").read_bytes())
    assert accepted["faces"] == 0
    assert answer.faces == []
