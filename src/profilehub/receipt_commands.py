"""``profilehub receipt key | verify``: shells over ``profilehub.receipts`` and its store."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import IO, Any

import click

from profilehub.cli import domain_errors, loading_modules, open_org_db, org_id_option, receipt_keys

# Each command imports ``profilehub.receipts`` (cryptography) itself: every other command's start-up
# paid for it (bench/NOTES-ci.md).


@click.group()
def receipt() -> None:
    """Erasure receipts: each org's signing key, and checking a saved receipt offline.

    See docs/privacy.md.
    """


@receipt.command("key")
@org_id_option
@click.option("--base64", "as_base64", is_flag=True, help="Base64 of the 32 raw bytes instead of PEM.")
@domain_errors
def receipt_key(org_id: int, as_base64: bool) -> None:
    """Print the org's receipt public key (made now if the org has none yet), to pin when verifying:
    `profilehub receipt key --org-id N > org-N-receipts.pem`. Its key id goes to stderr."""
    with loading_modules():
        from profilehub.receipts import key_id, public_pem, public_raw

    keys = receipt_keys()
    with open_org_db(org_id) as db:
        public = db.write(lambda c: keys.public_key(c, org_id))
    click.echo(f"org {org_id} receipt key {key_id(public)} (Ed25519)", err=True)
    if as_base64:
        click.echo(base64.b64encode(public_raw(public)).decode("ascii"))
    else:
        click.echo(public_pem(public), nl=False)


@receipt.command("verify")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--public-key",
    "key_file",
    type=click.File("r", encoding="utf-8"),
    help="The org's public key (PEM from `profilehub receipt key`, or its base64) to check the "
    "signature with. Without it the key the receipt carries is used: that shows the receipt is "
    "unchanged since it was signed, not who signed it.",
)
def receipt_verify(file: IO[str], key_file: IO[str] | None) -> None:
    """Check a receipt saved from GET /cdp/v1/erasures/{receiptId} (FILE, or - for stdin), offline:
    no database is used. Prints "valid ..." and exits 0, or says what is wrong and exits 1."""
    with loading_modules():
        from profilehub.receipts import ReceiptInvalid, load_public_key, verify

    pinned = None
    if key_file is not None:
        try:
            pinned = load_public_key(key_file.read())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--public-key") from exc
    try:
        receipt = json.loads(file.read(), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"invalid: {file.name} is not a JSON receipt ({exc})") from exc
    try:
        checked = verify(receipt, pinned)
    except ReceiptInvalid as exc:
        raise click.ClickException(f"invalid: {exc}") from exc
    when = receipt.get("erasedAt")
    at = (
        datetime.fromtimestamp(when / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(when, int)
        else "?"
    )
    ucids = receipt.get("ucids")
    click.echo(
        f"valid: receipt {checked.receipt_id} of org {receipt.get('orgId')}, erased {at} by "
        f"{receipt.get('erasedBy')}, {len(ucids) if isinstance(ucids, list) else 0} ucid(s); "
        f"signed by key {checked.key_id}"
        + (
            " (the key given)"
            if checked.pinned
            else " (the key the receipt carries: pin the org's key with --public-key to know who signed)"
        )
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A member given twice reads differently to different parsers: refuse it rather than pick one.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"member {key!r} appears twice")
        out[key] = value
    return out
