"""Handler settings refuse values that cannot work, at start-up rather than on the first request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloud.settings import Settings


@pytest.mark.parametrize("prefix", ["", "facepipe-reply-", "a" * 80])
def test_reply_to_prefix_is_empty_or_a_queue_name(prefix: str) -> None:
    assert Settings(reply_to_prefix=prefix).reply_to_prefix == prefix


@pytest.mark.parametrize("prefix", ["https://sqs.example/123/facepipe-", "two words", "a" * 81, "arn:aws:sqs:x"])
def test_reply_to_prefix_that_no_queue_name_could_start_with_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="reply_to_prefix"):
        Settings(reply_to_prefix=prefix)
