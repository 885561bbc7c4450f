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
from collections.abc import Sequence

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
    NoKeysError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from events.envelope import Envelope, RawPayload
from events.ids import uuid7
from events.store import UNAVAILABLE, StoreUnavailable
from events.streams import MESSAGE_DELETE_DENIED, WAY_OUT
from events.subjects import Naming
from events.types import LeadCaptured

log = structlog.get_logger("dealstream.vault")

_keys_encoder = msgspec.json.Encoder()
_keys_decoder = msgspec.json.Decoder(dict[str, bytes])

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


def seal(envelope: Envelope, key: bytes, key_ref: str | None = None) -> Envelope:
    """The capture with its personal fields and raw payload encrypted (other events pass unchanged);
    ``key_ref`` names the shared entry that holds the key, if it is not the lead's own."""
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
        key_ref=key_ref,
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
    """The per-lead keys, in a NATS key-value bucket: an entry per lead captured alone, one shared entry per batch
    of leads captured together. Erasure overwrites the key's record in nats-server's files."""

    def __init__(self, js: JetStreamContext, naming: Naming) -> None:
        self._js = js
        self._naming = naming
        self._bucket = naming.lead_keys_bucket
        self._kv: KeyValue | None = None

    async def _store(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self._bucket)
            except BucketNotFoundError as exc:
                # Only the administrator makes streams (every process checks them at start): never made here.
                raise StoreUnavailable(f"the lead-keys bucket {self._bucket} is missing: {WAY_OUT}") from exc
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

    async def sealed_together(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Captures ready for the log, sealed with fresh keys kept in one shared entry: one write for all of
        them instead of one per lead (each capture names the entry in ``key_ref``)."""
        captures = {e.aggregate_id for e in envelopes if isinstance(e.data, LeadCaptured) and e.data.sealed is None}
        if len(captures) < 2:
            return [await self.sealed(e) for e in envelopes]
        keys = {lead_id: AESGCM.generate_key(bit_length=256) for lead_id in sorted(captures)}
        ref = f"batch_{uuid7().replace('-', '')}"
        try:
            await (await self._store()).create(ref, _keys_encoder.encode(keys))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while storing the keys of {len(keys)} leads") from exc
        # A lead that already exists keeps its first capture: the append of this one fails, its new key opens nothing.
        return [seal(e, keys[e.aggregate_id], ref) if e.aggregate_id in keys else e for e in envelopes]

    async def shared_keys(self, ref: str) -> dict[str, bytes]:
        """The keys a shared entry still holds, by lead id (none once all were erased)."""
        try:
            entry = await (await self._store()).get(ref)
        except KeyNotFoundError:
            return {}
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while reading the key entry {ref}") from exc
        return _keys_decoder.decode(entry.value) if entry.value else {}

    async def unsealed(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Captures as they were given (or erased), for readers allowed to see personal data."""
        keys: dict[str, bytes | None] = {}
        shared: dict[str, dict[str, bytes]] = {}
        out = []
        for envelope in envelopes:
            data = envelope.data
            if isinstance(data, LeadCaptured):
                if data.key_ref is not None:
                    if data.key_ref not in shared:
                        shared[data.key_ref] = await self.shared_keys(data.key_ref)
                    envelope = unseal(envelope, shared[data.key_ref].get(envelope.aggregate_id))
                else:
                    if envelope.aggregate_id not in keys:
                        keys[envelope.aggregate_id] = await self.key(envelope.aggregate_id)
                    envelope = unseal(envelope, keys[envelope.aggregate_id])
            out.append(envelope)
        return out

    async def erase(self, lead_id: str, key_ref: str | None = None) -> bool:
        """Destroy the lead's key for good (in the shared entry ``key_ref`` if its capture names one); False if
        it had none."""
        try:
            return await (self._erase(lead_id) if key_ref is None else self._erase_shared(lead_id, key_ref))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__} while erasing the key of lead {lead_id}") from exc

    async def _erase(self, lead_id: str) -> bool:
        kv = await self._store()
        try:
            entry = await kv.get(lead_id)
        except KeyNotFoundError:
            return False
        await self._overwrite(entry.revision, lead_id)
        await kv.purge(lead_id)
        return True

    async def _erase_shared(self, lead_id: str, ref: str) -> bool:
        kv = await self._store()
        for _ in range(10):
            try:
                entry = await kv.get(ref)
            except KeyNotFoundError:
                return False
            keys = _keys_decoder.decode(entry.value) if entry.value else {}
            if lead_id not in keys:
                # Gone already; but if an erasure stopped between its two steps, the older revision still holds it.
                await self._overwrite_older(ref, entry.revision or 0, lead_id)
                return False
            rest = {k: v for k, v in keys.items() if k != lead_id}
            if not rest:
                await self._overwrite(entry.revision, lead_id)
                await kv.purge(ref)
                return True
            try:
                # The bucket keeps two revisions per entry: the new one lands before the old one is overwritten,
                # so no moment exists where the other leads' keys are nowhere.
                await kv.update(ref, _keys_encoder.encode(rest), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # another lead of the same entry was erased meanwhile: read it again
            await self._overwrite(entry.revision, lead_id)
            return True
        raise StoreUnavailable(f"the key entry {ref} kept changing while erasing lead {lead_id}")

    async def _overwrite_older(self, ref: str, latest: int, lead_id: str) -> None:
        try:
            revisions = [e.revision for e in await (await self._store()).history(ref)]
        except NoKeysError:
            return
        for revision in revisions:
            if revision is not None and revision < latest:
                await self._overwrite(revision, lead_id)

    async def _overwrite(self, revision: int | None, lead_id: str) -> None:
        # A purge or an update alone only marks a record deleted: its bytes would stay in the stream's block file
        # until the server compacts it. The message-delete API overwrites the record in place.
        try:
            await self._js.delete_msg(self._naming.lead_keys_stream, revision or 0)
        except NotFoundError:
            pass  # a concurrent erasure overwrote it first
        except APIError as exc:
            if exc.err_code != MESSAGE_DELETE_DENIED:
                raise
            log.warning("vault.key_not_overwritten", lead_id=lead_id, bucket=self._bucket, reason=exc.description)
