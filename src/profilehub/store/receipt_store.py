"""Erasure receipts in the database: each org's signing key, and the signed receipts.

The format, signing and verification are ``profilehub.receipts`` (no database); this module keeps
the keys and receipts and counts what an erasure removes. docs/privacy.md is the user's reference.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest, NotFound, ServiceUnavailable
from profilehub.receipts import FORMAT, key_id, public_raw, sign
from profilehub.store.batch_store import chunks
from profilehub.store.changes import now_ms
from profilehub.store.database import lock_scope
from profilehub.store.tables import (
    consent_ledger,
    erasure_receipts,
    events,
    profile_ids,
    profile_writes,
    receipt_keys,
)

PASSPHRASE_ENV = "PROFILEHUB_RECEIPT_KEY_PASSPHRASE"


class ReceiptKeyLocked(ServiceUnavailable):
    """The org's key is stored encrypted and this process has not the passphrase that opens it.

    A 503, not a 500: nothing is wrong with the request or the data, the server is missing its
    configuration, and the erasure (refused whole) succeeds once that is set. ``serve`` refuses to
    start, and /readyz answers 503, when the passphrase it has does not open the keys
    (``ReceiptKeys.problem``)."""


class ReceiptKeys:
    """Each org's receipt signing key: made on first need, stored encrypted with ``passphrase``
    when one is set (PROFILEHUB_RECEIPT_KEY_PASSPHRASE), opened once per process.

    A key stored in the clear (made before a passphrase was set) is stored again encrypted the
    next time it is used once a passphrase is set.
    """

    def __init__(self, passphrase: str = "") -> None:
        self._passphrase = passphrase.encode("utf-8")
        self._opened: dict[str, Ed25519PrivateKey] = {}  # by the stored PEM text
        self._passwords: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def _password(self, org_id: int) -> bytes:
        """The PKCS#8 password of the org's key: the passphrase stretched with scrypt.

        PKCS#8 as ``cryptography`` writes it derives its AES key with 2,048 rounds of PBKDF2,
        which a stolen database would let one guess a short passphrase against quickly; scrypt
        (about 0.1 s and 32 MiB a guess, salted per org) first makes each guess cost that much.
        Once per org and process: the result is kept."""
        with self._lock:
            found = self._passwords.get(org_id)
        if found is None:
            kdf = Scrypt(
                salt=f"profilehub receipt key of org {org_id}".encode(), length=32, n=2**15, r=8, p=1
            )
            found = kdf.derive(self._passphrase).hex().encode("ascii")
            with self._lock:
                self._passwords[org_id] = found
        return found

    def _stored(self, org_id: int, key: Ed25519PrivateKey) -> str:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._password(org_id))
            if self._passphrase
            else serialization.NoEncryption()
        )
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode("ascii")

    def _open(self, org_id: int, pem: str) -> Ed25519PrivateKey:
        with self._lock:
            found = self._opened.get(pem)
        if found is not None:
            return found
        encrypted = "ENCRYPTED" in pem.split("\n", 1)[0]
        if encrypted and not self._passphrase:
            raise ReceiptKeyLocked(
                f"org {org_id}'s receipt key is stored encrypted: set {PASSPHRASE_ENV} to the "
                "passphrase it was made with"
            )
        try:
            key = serialization.load_pem_private_key(
                pem.encode("ascii"), self._password(org_id) if encrypted else None
            )
        except ValueError as exc:
            raise ReceiptKeyLocked(
                f"org {org_id}'s receipt key does not open with {PASSPHRASE_ENV}: "
                "it was made with another passphrase"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ReceiptKeyLocked(f"org {org_id}'s stored receipt key is not an Ed25519 key")
        with self._lock:
            self._opened[pem] = key
        return key

    def problem(self, conn: Connection) -> str | None:
        """Why this process cannot sign receipts with the keys stored (None: it can): some key is
        stored encrypted and no passphrase is set, or the passphrase does not open the key made
        last. For ``serve`` to refuse to start and /readyz to answer 503, rather than an erasure to
        find out.

        Only the newest encrypted key is opened (once per process, then kept): each costs a scrypt
        stretch of about 0.1 s, and one passphrase serves every org. A key of one org made with
        another passphrase is found at that org's erasure, which is then refused (503) whole."""
        encrypted = receipt_keys.c.private_key.like("-----BEGIN ENCRYPTED%")
        newest = conn.execute(
            sa.select(receipt_keys.c.org_id, receipt_keys.c.private_key)
            .where(encrypted)
            .order_by(receipt_keys.c.created_ts.desc(), receipt_keys.c.org_id.desc())
            .limit(1)
        ).first()
        if newest is None:
            return None
        if not self._passphrase:
            return (
                f"{PASSPHRASE_ENV} is not set, and receipt signing keys are stored encrypted "
                f"(org {newest.org_id}'s among them): set it to the passphrase they were made with, "
                "or erasures of those orgs are refused"
            )
        try:
            self._open(newest.org_id, str(newest.private_key))
        except ReceiptKeyLocked as exc:
            return f"{exc.message}; set it to the passphrase the keys were made with, or erasures are refused"
        return None

    def open_stored(self, conn: Connection, org_id: int) -> None:
        """Open the org's stored key now, if it has one (``ReceiptKeyLocked`` if it does not open):
        before an erasure is queued, so the scrypt stretch is not paid in the writer's turn and a
        key that does not open refuses the erasure before anything is read for it."""
        pem = conn.execute(
            sa.select(receipt_keys.c.private_key).where(receipt_keys.c.org_id == org_id)
        ).scalar()
        if pem is not None:
            self._open(org_id, str(pem))

    def signing_key(self, conn: Connection, org_id: int) -> Ed25519PrivateKey:
        """The org's key, made and stored now if it has none (in ``conn``'s transaction)."""
        lock_scope(conn, org_id, "receipt_key")  # two first erasures of an org make one key
        row = conn.execute(
            sa.select(receipt_keys.c.private_key).where(receipt_keys.c.org_id == org_id)
        ).first()
        if row is None:
            key = Ed25519PrivateKey.generate()
            public = key.public_key()
            conn.execute(
                receipt_keys.insert().values(
                    org_id=org_id,
                    key_id=key_id(public),
                    public_key=base64.b64encode(public_raw(public)).decode("ascii"),
                    private_key=self._stored(org_id, key),
                    created_ts=now_ms(),
                )
            )
            return key
        pem = str(row.private_key)
        key = self._open(org_id, pem)
        if self._passphrase and "ENCRYPTED" not in pem.split("\n", 1)[0]:
            conn.execute(
                receipt_keys.update()
                .where(receipt_keys.c.org_id == org_id)
                .values(private_key=self._stored(org_id, key))
            )
        return key

    def public_key(self, conn: Connection, org_id: int) -> Ed25519PublicKey:
        """The org's public key (its key made now if it has none): what a verifier pins. Read as
        stored, so the passphrase is needed only to make a key."""
        stored = conn.execute(
            sa.select(receipt_keys.c.public_key).where(receipt_keys.c.org_id == org_id)
        ).scalar()
        if stored is not None:
            return Ed25519PublicKey.from_public_bytes(base64.b64decode(stored))
        return self.signing_key(conn, org_id).public_key()


def erasure_counts(
    conn: Connection, org_id: int, masters: Sequence[str], ucids: Sequence[str]
) -> dict[str, int]:
    """What erasing ``masters`` (and ``ucids``, every ucid merged into them too) is about to
    remove, counted before it goes: ids, journal rows, consent ledger rows and earlier events."""
    counts = {"ids": 0, "journalRows": 0, "consentRows": 0, "events": 0}
    for part in chunks(sorted(set(masters))):
        counts["ids"] += _count(
            conn, profile_ids, profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(part)
        )
    for part in chunks(sorted(set(ucids))):
        counts["journalRows"] += _count(
            conn, profile_writes, profile_writes.c.org_id == org_id, profile_writes.c.ucid.in_(part)
        )
        counts["consentRows"] += _count(
            conn, consent_ledger, consent_ledger.c.org_id == org_id, consent_ledger.c.ucid.in_(part)
        )
        counts["events"] += _count(conn, events, events.c.org_id == org_id, events.c.entity_id.in_(part))
    return counts


def _count(conn: Connection, table: sa.Table, *where: Any) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def issue_receipt(
    conn: Connection,
    keys: ReceiptKeys,
    *,
    receipt_id: str,
    org_id: int,
    region: str,
    by: str,
    ucids: Sequence[str],
    counts: dict[str, int],
    actor: str,
    send_email_notification: bool,
    ts: int,
) -> dict[str, Any]:
    """Sign and store the receipt of an erasure, in the erasure's transaction; the receipt."""
    body = {
        "format": FORMAT,
        "receiptId": receipt_id,
        "orgId": org_id,
        "region": region,
        "erasedAt": ts,
        "erasedBy": actor,
        "by": by,
        "ucids": list(ucids),
        "counts": dict(sorted(counts.items())),
        "sendEmailNotification": send_email_notification,
    }
    receipt = sign(keys.signing_key(conn, org_id), body)
    conn.execute(
        erasure_receipts.insert().values(
            org_id=org_id,
            receipt_id=receipt["receiptId"],
            ts=ts,
            body=orjson.dumps(receipt).decode(),
        )
    )
    return receipt


def load_receipt(conn: Connection, org_id: int, receipt_id: str) -> dict[str, Any]:
    """The stored receipt, as signed; 400 for an id that is no receipt id (a UUID), 404 when the
    org has none of that id."""
    try:
        receipt_id = str(uuid.UUID(receipt_id))
    except ValueError as exc:
        raise BadRequest(f"{receipt_id!r} is not a receipt id (a UUID)", field="receiptId") from exc
    body = conn.execute(
        sa.select(erasure_receipts.c.body).where(
            erasure_receipts.c.org_id == org_id, erasure_receipts.c.receipt_id == receipt_id
        )
    ).scalar()
    if body is None:
        raise NotFound(f"org {org_id} has no erasure receipt {receipt_id}", field="receiptId")
    found: dict[str, Any] = orjson.loads(body)
    return found
