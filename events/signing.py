"""Ed25519 keys for signing what the auditor checks (exports, anchors): the operator signs with the private
key; the auditor checks with the public key the company gave them, never with one found beside the data."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def new_signing_key() -> bytes:
    """A fresh Ed25519 private key, PEM (keep it secret; give auditors the public key)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _private_key(private_pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 key; make one with 'dealstream audit keygen'")
    return key


def public_key_of(private_pem: bytes) -> str:
    public = _private_key(private_pem).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(private_pem: bytes, payload: bytes) -> str:
    return base64.b64encode(_private_key(private_pem).sign(payload)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from its base64 text; ValueError naming the problem otherwise."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a base64 Ed25519 public key (32 bytes), as 'dealstream audit keygen' prints") from exc


def signature_holds(key: Ed25519PublicKey, signature: str, payload: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), payload)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
