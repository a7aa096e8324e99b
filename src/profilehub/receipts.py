"""Erasure receipts: their canonical form, signing and offline verification.

Pure (no database): ``profilehub receipt verify`` runs this on a saved receipt with nothing else.

A receipt is a JSON object. Its ``signature`` is the Ed25519 signature (base64) of the
*canonical form* of every other member: JSON with keys sorted, no whitespace (``,`` and ``:``
separators), non-ASCII characters escaped as ``\\uXXXX``, encoded as UTF-8 (docs/privacy.md says
how to check one with jq and openssl). Receipts hold only strings, integers, booleans, lists and
objects of those, so this form is unambiguous; a field added, removed or changed changes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "profilehub-erasure-receipt/1"
ALGORITHM = "Ed25519"


class ReceiptInvalid(Exception):
    """The receipt does not verify; the message says why."""


def canonical_bytes(receipt: dict[str, Any]) -> bytes:
    """What the signature covers: every member but ``signature``, in canonical form."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of a public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def sign(key: Ed25519PrivateKey, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the signer's ``algorithm``, ``keyId`` and ``publicKey``, and its ``signature``."""
    public = key.public_key()
    receipt = {
        **body,
        "algorithm": ALGORITHM,
        "keyId": key_id(public),
        "publicKey": base64.b64encode(public_raw(public)).decode("ascii"),
    }
    receipt["signature"] = base64.b64encode(key.sign(canonical_bytes(receipt))).decode("ascii")
    return receipt


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (``-----BEGIN PUBLIC KEY-----``) or base64 of its 32 raw
    bytes (a receipt's ``publicKey``); ``ValueError`` saying what is wrong otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"a {type(key).__name__}, not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("neither a PEM public key nor base64") from exc
    if len(raw) != 32:
        raise ValueError(f"base64 of {len(raw)} bytes; an Ed25519 public key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class Verified:
    receipt_id: str
    key_id: str
    pinned: bool  # checked with a key the caller gave, not only the one the receipt carries


def verify(receipt: Any, pinned: Ed25519PublicKey | None = None) -> Verified:
    """Check ``receipt``'s signature: with ``pinned`` when given (the org's key, obtained apart),
    else with the key the receipt carries (which shows it was not changed since it was signed, not
    who signed it). ``ReceiptInvalid`` naming what is wrong."""
    if not isinstance(receipt, dict):
        raise ReceiptInvalid("a receipt is a JSON object")
    if receipt.get("format") != FORMAT:
        raise ReceiptInvalid(f"format: expected {FORMAT!r}, got {receipt.get('format')!r}")
    if receipt.get("algorithm") != ALGORITHM:
        raise ReceiptInvalid(f"algorithm: expected {ALGORITHM!r}, got {receipt.get('algorithm')!r}")
    signature = receipt.get("signature")
    if not isinstance(signature, str):
        raise ReceiptInvalid("signature: missing (a base64 string)")
    try:
        signed = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptInvalid("signature: not base64") from exc
    carried = receipt.get("publicKey")
    try:
        own = load_public_key(carried) if isinstance(carried, str) else None
    except ValueError as exc:
        raise ReceiptInvalid(f"publicKey: {exc}") from exc
    key = pinned if pinned is not None else own
    if key is None:
        raise ReceiptInvalid("publicKey: missing, and no public key was given to check it with")
    if pinned is not None and own is not None and public_raw(own) != public_raw(pinned):
        raise ReceiptInvalid(
            f"the receipt names key {key_id(own)}, not the key given ({key_id(pinned)}): "
            "not signed by the key given (another org's receipt, or its publicKey was changed)"
        )
    try:
        key.verify(signed, canonical_bytes(receipt))
    except InvalidSignature as exc:
        raise ReceiptInvalid(
            "signature does not match: the receipt was changed after it was signed, "
            f"or was not signed by key {key_id(key)}"
        ) from exc
    return Verified(str(receipt.get("receiptId")), key_id(key), pinned is not None)
