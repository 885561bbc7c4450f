"""Bytes in the log <-> envelopes. JSON, UTC times, decimals as strings."""

from __future__ import annotations

import datetime as dt

import msgspec

from events.envelope import Envelope

_encoder = msgspec.json.Encoder(decimal_format="string")
_decoder = msgspec.json.Decoder(Envelope)


class DecodeError(ValueError):
    """A message in the log (or offered to it) is not a valid envelope; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes) -> Envelope:
    try:
        envelope = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
    except UnicodeDecodeError as exc:  # msgspec's answer to invalid UTF-8 inside a JSON string
        raise DecodeError(f"not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError:  # msgspec's answer to arrays or objects nested about a thousand deep
        raise DecodeError("nested too deeply") from None
    for name in ("occurred_at", "recorded_at"):
        value: dt.datetime = getattr(envelope, name)
        if value.tzinfo is None or value.utcoffset() != dt.timedelta(0):
            raise DecodeError(f"`{name}` must be UTC - at `$.{name}`")
    return envelope
