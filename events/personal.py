"""Personal data that can be erased from an immutable log: crypto-shredding.

Each lead gets its own random AES-256-GCM key, kept in a NATS key-value bucket (``<PREFIX>_LEAD_KEYS``,
the one place in Dealstream where deletes are allowed). The rule is an allow-list: everything a source sent
about a lead is encrypted with that key before it is appended, but for :data:`CLEAR_FIELDS`; and so is every
free text people type about a person (:data:`TEXT_FIELDS`: touchpoint notes, task titles, deal names, reasons),
with the key of the lead it belongs to (a deal with no lead has a key of its own, ``deal.<id>``). The log holds
only ciphertext of them. Erasing the lead purges its key: the ciphertext stays in the log, the hash chain stays
intact, and nobody can read those fields any more. Workers that need the values (scoring, routing, the board)
open them with the vault as they fold, and scrub what they hold when the lead's erasure reaches them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

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
from events.types import (
    ContactCreated,
    DealOpened,
    DealUpdated,
    Event,
    LeadCaptured,
    LeadCorrected,
    LeadDetailsFetched,
    LeadDisqualified,
    LeadErased,
    LeadQualified,
    SealedText,
    TaskCompleted,
    TaskScheduled,
    TouchpointLogged,
)

log = structlog.get_logger("dealstream.vault")

_keys_encoder = msgspec.json.Encoder()
_keys_decoder = msgspec.json.Decoder(dict[str, bytes])

CLEAR_FIELDS = ("country", "source", "utm_campaign")
"""A capture's source-sent fields that stay readable in the log: an ISO country code and the marketing source and
campaign ids (``MarketingId``: no ``@``, no blanks, not all digits) name nobody, and rules and metrics group by them.
``has_phone`` (a yes/no), the envelope's channel, actor and times stay too."""
_NOT_SENT = ("sealed", "email_domain", "has_phone", "key_ref")
PERSONAL_FIELDS = tuple(f for f in LeadCaptured.__struct_fields__ if f not in CLEAR_FIELDS and f not in _NOT_SENT)
"""Every field of a capture that is sealed: contact fields, company, title, message, the source's ids, every
answer and campaign value."""
_MAPS = ("campaign", "answers")

TEXT_FIELDS: dict[type[Any], tuple[str, ...]] = {
    TouchpointLogged: ("outcome", "subject", "notes"),
    TaskScheduled: ("title",),
    TaskCompleted: ("outcome",),
    DealOpened: ("name",),
    DealUpdated: ("name", "next_step"),
    LeadQualified: ("reason",),
    LeadDisqualified: ("reason",),
    LeadDetailsFetched: ("email", "phone", "first_name", "last_name", "full_name", "company", "job_title", "answers"),
    LeadCorrected: ("email", "phone", "first_name", "last_name", "full_name", "company", "job_title"),
    ContactCreated: ("name", "email", "phone", "job_title"),
}
"""Free text people (or the scores worker's explanation, which quotes the lead's answers) write about a person.
A deal's lost reason stays in clear: it is the category ``lost_by_reason`` counts, not a note about anyone; so
does an erasure's reason, which is read after the key is gone. A source's fetched details (``LeadDetailsFetched``)
are sealed this way with the lead's key: everything it sent about the person."""
ERASED = "[erased]"
_CONCURRENT_READS = 256
_T = TypeVar("_T")


def _lead_aad(lead_id: str) -> bytes:
    # Bound to the lead: a ciphertext moved to another lead does not decrypt.
    return f"dealstream-lead:{lead_id}".encode()


def _text_aad(envelope: Envelope, key_id: str) -> bytes:
    # Bound to the aggregate and the key's owner: a box moved to another deal or lead does not decrypt.
    return f"dealstream-text:{envelope.aggregate_type}:{envelope.aggregate_id}:{key_id}".encode()


def _encrypt(key: bytes, aad: bytes, plaintext: bytes) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, aad)).decode()


def _decrypt(key: bytes, aad: bytes, sealed: str) -> bytes:
    raw = base64.b64decode(sealed)
    return AESGCM(key).decrypt(raw[:12], raw[12:], aad)


def seal(envelope: Envelope, key: bytes, key_ref: str | None = None) -> Envelope:
    """The capture with everything its source sent encrypted but :data:`CLEAR_FIELDS` (other events pass
    unchanged); ``key_ref`` names the shared entry that holds the key, if it is not the lead's own."""
    data = envelope.data
    if not isinstance(data, LeadCaptured) or data.sealed is not None:
        return envelope
    personal = {f: value for f in PERSONAL_FIELDS if (value := getattr(data, f)) is not None and value != {}}
    aad = _lead_aad(envelope.aggregate_id)
    sealed_data = msgspec.structs.replace(
        data,
        **{f: {} if f in _MAPS else None for f in PERSONAL_FIELDS},
        sealed=_encrypt(key, aad, msgspec.json.encode(personal)) if personal else None,
        email_domain=None,
        has_phone=data.phone is not None,
        key_ref=key_ref,
    )
    raw = envelope.raw
    if raw is not None and not raw.sealed:
        raw = msgspec.structs.replace(raw, body=_encrypt(key, aad, raw.body.encode()), sealed=True)
    return msgspec.structs.replace(envelope, data=sealed_data, raw=raw)


def unseal(envelope: Envelope, key: bytes | None) -> Envelope:
    """The capture as it was given, if the key still exists; erased (its text fields ``[erased]``) if not.
    Other events with sealed free text: see :func:`unseal_text`."""
    data = envelope.data
    if not isinstance(data, LeadCaptured):
        return unseal_text(envelope, key)
    raw = envelope.raw
    if key is None:
        # Which fields were given is sealed too: every text field the log holds no value of reads erased. An
        # erased lead's fields are gone; the marker is not an e-mail or a phone, so build it unvalidated.
        fields = {
            f: ERASED
            for f in PERSONAL_FIELDS
            if data.sealed is not None and f not in _MAPS and getattr(data, f) is None
        }
        shown = msgspec.structs.replace(data, **fields) if fields else data
        if raw is not None and raw.sealed:
            raw = RawPayload(content_type=raw.content_type, body=ERASED, batch_sha256=raw.batch_sha256, sealed=True)
        return msgspec.structs.replace(envelope, data=shown, raw=raw)
    aad = _lead_aad(envelope.aggregate_id)
    try:
        if data.sealed is not None:
            personal = msgspec.json.decode(_decrypt(key, aad, data.sealed))
            data = msgspec.structs.replace(data, sealed=None, **personal)
        if raw is not None and raw.sealed:
            body = _decrypt(key, aad, raw.body).decode()
            raw = RawPayload(content_type=raw.content_type, body=body, batch_sha256=raw.batch_sha256)
    except InvalidTag:
        return unseal(envelope, None)  # a key made after the erasure (a late redelivery) opens nothing
    return msgspec.structs.replace(envelope, data=data, raw=raw)


def has_text(event: Event) -> bool:
    """Whether an event carries free text still to be sealed."""
    fields = TEXT_FIELDS.get(type(event))
    return bool(fields) and getattr(event, "sealed", None) is None and any(getattr(event, f) for f in fields or ())


def seal_text(envelope: Envelope, key: bytes, key_id: str, key_ref: str | None = None) -> Envelope:
    """The event with its free text (:data:`TEXT_FIELDS`) encrypted with the key ``key_id`` names (the person's
    it is about); events without any pass unchanged."""
    data = envelope.data
    if not has_text(data):
        return envelope
    text = {f: value for f in TEXT_FIELDS[type(data)] if (value := getattr(data, f)) is not None}
    box = _encrypt(key, _text_aad(envelope, key_id), msgspec.json.encode(text))
    sealed = SealedText(key_id=key_id, key_ref=key_ref, fields=tuple(text), box=box)
    cleared: dict[str, Any] = {f: {} if f in _MAPS else None for f in text}
    return msgspec.structs.replace(envelope, data=msgspec.structs.replace(data, **cleared, sealed=sealed))


def unseal_text(envelope: Envelope, key: bytes | None) -> Envelope:
    """The event's free text opened with its key; ``[erased]`` in each sealed field once the key is gone."""
    data = envelope.data
    sealed: SealedText | None = getattr(data, "sealed", None)
    if not isinstance(sealed, SealedText):
        return envelope
    text: dict[str, Any] = {f: {} if f in _MAPS else ERASED for f in sealed.fields}
    if key is not None:
        with contextlib.suppress(InvalidTag):  # a key made after the erasure opens nothing
            text = msgspec.json.decode(_decrypt(key, _text_aad(envelope, sealed.key_id), sealed.box))
    return msgspec.structs.replace(envelope, data=msgspec.structs.replace(data, **text, sealed=None))


OWN_KEYS = ("deal", "contact")
"""Aggregates whose text has a key of their own when no lead's key covers it: ``deal.<id>``, ``contact.<id>``."""


def own_key_id(aggregate_type: str, aggregate_id: str) -> str:
    """The key id of a deal's or a contact's own key in the lead-keys bucket."""
    return f"{aggregate_type}.{aggregate_id}"


def lead_key_place(lead_id: str, history: Sequence[Envelope]) -> tuple[str | None, bool] | None:
    """Where a lead's key lives, from its history: (the shared entry or None for its own, whether a key may be
    made for it now); None if the lead is unknown or erased, so no new text about it can be sealed."""
    if not history or not isinstance(history[0].data, LeadCaptured):
        return None
    if any(isinstance(e.data, LeadErased) for e in history):
        return None
    captured, data = history[0], history[0].data
    assert isinstance(data, LeadCaptured)
    # A capture sealed with a key says the key existed: if it is gone now, the lead is being erased, and a new
    # key would make text about them readable again. Only a lead captured before keys existed gets one now.
    was_sealed = data.sealed is not None or (captured.raw is not None and captured.raw.sealed)
    return data.key_ref, not was_sealed


class Vault:
    """The per-lead keys, in a NATS key-value bucket: an entry per lead captured alone, one shared entry per batch
    of leads captured together. Erasure overwrites the key's record in nats-server's files."""

    def __init__(self, js: JetStreamContext, naming: Naming, cached_keys: int = 0) -> None:
        self._js = js
        self._naming = naming
        self._bucket = naming.lead_keys_bucket
        self._kv: KeyValue | None = None
        # Opened keys by (key id, shared entry), for a reader that folds the log in order and calls ``forget``
        # when a lead's erasure reaches it (a projection engine); 0: every call reads the keys afresh.
        self._cached_keys = cached_keys
        self._cache: OrderedDict[tuple[str, str | None], bytes | None] = OrderedDict()

    def forget(self, lead_id: str) -> None:
        """Drop a lead's key from the cache: its erasure reached this reader."""
        for place in [p for p in self._cache if p[0] == lead_id]:
            del self._cache[place]

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

    async def unsealed(
        self, envelopes: Sequence[Envelope], only: tuple[type[Any], ...] | None = None
    ) -> list[Envelope]:
        """Events as they were given (or erased), for readers allowed to see personal data: captures and the
        free text of the others (``only`` these event types, if given; the rest pass sealed). Each key is read
        once per call, so a key erased meanwhile opens nothing next time."""
        places: list[tuple[str, str | None] | None] = []
        for envelope in envelopes:
            data = envelope.data
            place: tuple[str, str | None] | None = None
            if only is not None and not isinstance(data, only):
                pass
            elif isinstance(data, LeadCaptured):
                if data.sealed is not None or (envelope.raw is not None and envelope.raw.sealed):
                    place = (envelope.aggregate_id, data.key_ref)
            elif isinstance(sealed := getattr(data, "sealed", None), SealedText):
                place = (sealed.key_id, sealed.key_ref)
            places.append(place)
        found: dict[tuple[str, str | None], bytes | None] = {}
        for place in {p for p in places if p is not None}:
            if place in self._cache:
                self._cache.move_to_end(place)
                found[place] = self._cache[place]
        missing = {p for p in places if p is not None and p not in found}
        own = sorted({key_id for key_id, ref in missing if ref is None})
        refs = sorted({ref for _, ref in missing if ref is not None})
        if own or refs:
            await self._store()
        # Read concurrently: one request each, pipelined, instead of a round trip per lead (a projection's batch
        # of a thousand events names hundreds of leads).
        limit = asyncio.Semaphore(_CONCURRENT_READS)

        async def bounded(read: Awaitable[_T]) -> _T:
            async with limit:
                return await read

        keys = dict(zip(own, await asyncio.gather(*(bounded(self.key(k)) for k in own)), strict=True))
        shared = dict(zip(refs, await asyncio.gather(*(bounded(self.shared_keys(r)) for r in refs)), strict=True))
        for key_id, ref in missing:
            found[(key_id, ref)] = keys[key_id] if ref is None else shared[ref].get(key_id)
        if self._cached_keys:
            for place in missing:
                self._cache[place] = found[place]
            while len(self._cache) > self._cached_keys:
                self._cache.popitem(last=False)
        return [unseal(e, found[p]) if p is not None else e for e, p in zip(envelopes, places, strict=True)]

    async def text_key(
        self, envelope: Envelope, lead_id: str | None, lead_history: Sequence[Envelope]
    ) -> tuple[str, str | None, bytes] | None:
        """The key to seal an event's free text with: (key id, shared entry, key). The lead's, if the event is
        about one (``lead_id``, its history given) and it is not erased; else, for a deal, the deal's own key
        (``deal.<id>``, made on first use); None for a lead that is erased or unknown."""
        if lead_id is not None and (place := lead_key_place(lead_id, lead_history)) is not None:
            key_ref, may_create = place
            if key_ref is not None:
                key = (await self.shared_keys(key_ref)).get(lead_id)
            else:
                key = await self.key(lead_id)
                if key is None and may_create:
                    key = await self.key(lead_id, create=True)
            if key is not None:
                return lead_id, key_ref, key
        if envelope.aggregate_type not in OWN_KEYS:
            return None
        key_id = own_key_id(envelope.aggregate_type, envelope.aggregate_id)
        # Read first: only a deal's first text makes its key, every later one finds it (one round trip, not two).
        key = await self.key(key_id) or await self.key(key_id, create=True)
        assert key is not None
        return key_id, None, key

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
