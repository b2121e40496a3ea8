"""Serializers for ``SESSION_REDIS['SERIALIZER']``.

The default is ``settings.SESSION_SERIALIZER`` (JSON): compact, and readable
with ``redis-cli``. ``SignedJSONSerializer`` stores what Django's own backends
store (signed, compressed JSON) for teams that want a tampered value in Redis
to be rejected rather than trusted.
"""

from __future__ import annotations

from typing import Any

from django.core import signing

SALT = "django_redis_sessions.serializers.SignedJSONSerializer"


class SignedJSONSerializer:
    """JSON, compressed and signed with ``SECRET_KEY`` (and its fallbacks).

    No timestamp is signed, so the same session always serializes to the same
    bytes and an unchanged session still costs only a TTL refresh on save.
    """

    def dumps(self, obj: Any) -> bytes:
        signer = signing.Signer(salt=SALT)
        value = signer.sign_object(
            obj, serializer=signing.JSONSerializer, compress=True
        )
        return value.encode()

    def loads(self, data: bytes) -> Any:
        signer = signing.Signer(salt=SALT)
        return signer.unsign_object(data.decode(), serializer=signing.JSONSerializer)
