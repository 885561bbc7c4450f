"""Personal data that can be erased from an immutable log: crypto-shredding.

Each lead gets its own random AES-256-GCM key, kept in a NATS key-value bucket (``<PREFIX>_LEAD_KEYS``,
the one place in Dealstream where deletes are allowed). Before a lead's capture is appended, its personal
fields (:data:`PERSONAL_FIELDS`) and the raw source payload are encrypted with that key; the log holds only
ciphertext, never the plaintext. Erasing the lead purges its key: the ciphertext stays in the log, the hash
chain stays intact, and nobody can read those fields any more. What scoring needs of them (the e-mail's
domain, whether there is a phone) is kept in clear at capture.
"""

from __future__ import annotations

import base64
import os

import msgspec
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from events.envelope import Envelope, RawPayload
from events.store import UNAVAILABLE, StoreUnavailable
from events.streams import MESSAGE_DELETE_DENIED, StreamSettings, stream_configs
from events.subjects import Naming
from events.types import LeadCaptured

log = structlog.get_logger("dealstream.vault")

PERSONAL_FIELDS = ("email", "phone", "first_name", "last_name", "full_name", "message")
ERASED = "[erased]"


def _aad(lead_id: str) -> bytes:
    # Bound to the lead: a ciphertext moved to another lead does not decrypt.
    return f"dealstream-lead:{lead_id}".encode()


def _encrypt(key: bytes, lead_id: str, plaintext: bytes) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(lead_id))).decode()


def _decrypt(key: bytes, lead_id: str, sealed: str) -> bytes:
    raw = base64.b64decode(sealed)
    return AESGCM(key).decrypt(raw[:12], raw[12:], _aad(lead_id))


def seal(envelope: Envelope, key: bytes) -> Envelope:
    """The capture with its personal fields and raw payload encrypted (other events pass unchanged)."""
    data = envelope.data
    if not isinstance(data, LeadCaptured) or data.sealed is not None:
        return envelope
    personal = {f: getattr(data, f) for f in PERSONAL_FIELDS if getattr(data, f) is not None}
    domain = data.email.rsplit("@", 1)[-1].lower() if data.email else None
    sealed_data = msgspec.structs.replace(
        data,
        **dict.fromkeys(PERSONAL_FIELDS),
        sealed=_encrypt(key, envelope.aggregate_id, msgspec.json.encode(personal)) if personal else None,
        email_domain=domain,
        has_phone=data.phone is not None,
    )
    raw = envelope.raw
    if raw is not None and not raw.sealed:
        raw = msgspec.structs.replace(raw, body=_encrypt(key, envelope.aggregate_id, raw.body.encode()), sealed=True)
    return msgspec.structs.replace(envelope, data=sealed_data, raw=raw)


def unseal(envelope: Envelope, key: bytes | None) -> Envelope:
    """The capture as it was given, if the key still exists; erased (personal fields ``[erased]``) if not."""
    data = envelope.data
    if not isinstance(data, LeadCaptured):
        return envelope
    raw = envelope.raw
    if key is None:
        fields = {f: ERASED for f in PERSONAL_FIELDS if data.sealed is not None}
        # An erased lead's fields are gone; the marker is not an e-mail or a phone, so build it unvalidated.
        shown = msgspec.structs.replace(data, **fields) if fields else data
        if raw is not None and raw.sealed:
            raw = RawPayload(content_type=raw.content_type, body=ERASED, batch_sha256=raw.batch_sha256, sealed=True)
        return msgspec.structs.replace(envelope, data=shown, raw=raw)
    try:
        if data.sealed is not None:
            personal = msgspec.json.decode(_decrypt(key, envelope.aggregate_id, data.sealed))
            data = msgspec.structs.replace(data, sealed=None, **personal)
        if raw is not None and raw.sealed:
            body = _decrypt(key, envelope.aggregate_id, raw.body).decode()
            raw = RawPayload(content_type=raw.content_type, body=body, batch_sha256=raw.batch_sha256)
    except InvalidTag:
        return unseal(envelope, None)  # a key made after the erasure (a late redelivery) opens nothing
    return msgspec.structs.replace(envelope, data=data, raw=raw)


class Vault:
    """The per-lead keys, in a NATS key-value bucket with one revision per key; erasure overwrites a key's record."""

    def __init__(self, js: JetStreamContext, naming: Naming, replicas: int = 1) -> None:
        self._js = js
        self._naming = naming
        self._bucket = naming.lead_keys_bucket
        self._settings = StreamSettings(replicas=replicas)
        self._kv: KeyValue | None = None

    async def _store(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self._bucket)
            except BucketNotFoundError:
                # Made as ``ensure_streams`` makes it (deletes allowed, for erasure), by whoever needs it first.
                [config] = [c for c in stream_configs(self._naming, self._settings) if c.name == f"KV_{self._bucket}"]
                await self._js.add_stream(config)
                self._kv = await self._js.key_value(self._bucket)
        return self._kv

    async def key(self, lead_id: str, create: bool = False) -> bytes | None:
        """The lead's key; a new one if ``create`` and it has none (None: erased, or never had one)."""
        try:
            return await self._key(lead_id, create)
        except UNAVAILABLE as exc:
            # Like the log itself: "unreachable, nothing promised, retry", not a crash (the bucket's stream may be
            # electing a leader, or NATS restarting).
            raise StoreUnavailable(f"{type(exc).__name__} while reading the key of lead {lead_id}") from exc

    async def _key(self, lead_id: str, create: bool) -> bytes | None:
        kv = await self._store()
        if create:
            # Most captures are of new leads: one write instead of a read and a write.
            fresh = AESGCM.generate_key(bit_length=256)
            try:
                await kv.create(lead_id, base64.b64encode(fresh))
                return fresh
            except KeyWrongLastSequenceError:
                pass  # it has one: a redelivered capture, or a concurrent one made it first
        try:
            entry = await kv.get(lead_id)
        except KeyNotFoundError:
            return None
        return base64.b64decode(entry.value) if entry.value else None

    async def sealed(self, envelope: Envelope) -> Envelope:
        """A capture ready for the log: sealed with its lead's key (made now if the lead has none)."""
        if not isinstance(envelope.data, LeadCaptured):
            return envelope
        key = await self.key(envelope.aggregate_id, create=True)
        assert key is not None
        return seal(envelope, key)

    async def unsealed(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Captures as they were given (or erased), for readers allowed to see personal data."""
        keys: dict[str, bytes | None] = {}
        out = []
        for envelope in envelopes:
            if isinstance(envelope.data, LeadCaptured):
                if envelope.aggregate_id not in keys:
                    keys[envelope.aggregate_id] = await self.key(envelope.aggregate_id)
                envelope = unseal(envelope, keys[envelope.aggregate_id])
            out.append(envelope)
        return out

    async def erase(self, lead_id: str) -> bool:
        """Destroy the lead's key for good; False if it had none."""
        try:
            return await self._erase(lead_id)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while erasing the key of lead {lead_id}") from exc

    async def _erase(self, lead_id: str) -> bool:
        kv = await self._store()
        try:
            entry = await kv.get(lead_id)
        except KeyNotFoundError:
            return False
        # A purge alone only marks the key's record deleted: its bytes would stay in the stream's block file
        # until the server compacts it. The message-delete API overwrites the record in place first.
        try:
            await self._js.delete_msg(f"KV_{self._bucket}", entry.revision or 0)
        except NotFoundError:
            pass  # a concurrent erasure overwrote it first
        except APIError as exc:
            if exc.err_code != MESSAGE_DELETE_DENIED:
                raise
            log.warning("vault.key_not_overwritten", lead_id=lead_id, bucket=self._bucket, reason=exc.description)
        await kv.purge(lead_id)
        return True
