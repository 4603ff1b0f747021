"""Who signs with an access key of the moto server this process runs, as AWS would say: an IAM user its key
(`facepipe device add` made it over IAM's API), or an STS session (AssumeRole of the device role). moto keeps its
state in module globals. The local Function URL verifies signatures with it (cloud/emulator/function_url.py), and
moto's SQS records it as a message's SenderId, which moto itself leaves at one constant (cloud/emulator/moto_server.py).
"""

from __future__ import annotations

from moto.core.utils import utcnow
from moto.iam.models import iam_backends
from moto.sts.models import sts_backends

from cloud.emulator.function_url import Caller


def caller_of(access_key: str) -> Caller | None:
    """The active IAM user key or unexpired session `access_key` belongs to; None for any other key."""
    for account_id, account in list(iam_backends.items()):
        backend = account["aws"]
        key = backend.access_keys.get(access_key)
        user = backend.users.get(key.user_name) if key is not None and key.user_name else None
        if key is not None and user is not None and key.status == "Active":
            return Caller(access_key, key.secret_access_key, user.arn, user.id, account_id)
    for account_id, sts in list(sts_backends.items()):
        for session in list(sts["aws"].assumed_roles):
            if session.access_key_id == access_key and session.expiration > utcnow():
                return Caller(access_key, session.secret_access_key, session.arn, session.user_id, account_id,
                              session_token=session.session_token)
    return None


def sender_id(access_key: str, root_key: str, account_id: str) -> str | None:
    """SQS's SenderId for a request signed with `access_key`: a user's unique id (AIDA...), a session's
    ROLEID:SESSIONNAME, the account id for the account's root (the local stack's own key); None if unknown."""
    if access_key == root_key:
        return account_id
    caller = caller_of(access_key)
    return None if caller is None else caller.user_id
