"""Table definitions.

Every table is keyed by ``org_id`` first, and no query joins across orgs, so the schema can be
distributed by ``org_id`` later without change. Timestamps are epoch milliseconds (BIGINT).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    # Raw emails and phone numbers are hashed and dropped unless the org opts in.
    sa.Column("keep_raw_ids", sa.Boolean, nullable=False, server_default=sa.false()),
    # Bumped whenever the identity strategy changes, so caches know to reload it.
    sa.Column("strategy_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    # Where the org's CRM people resolve in the identity graph (one of its regions).
    sa.Column("home_region", sa.String(16), nullable=True),
)

org_regions = sa.Table(
    "org_regions",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("region", sa.String(16), primary_key=True),
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # sha256 of the whole secret; the secret itself is never stored.
    sa.Column("secret_hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "apikey" (CDP) or "token" (CRM)
    sa.Column("prefix", sa.String(32), nullable=False),  # shown in listings and the change log
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("scopes", sa.String(500), nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("revoked_ts", sa.BigInteger, nullable=True),
)

id_types = sa.Table(
    "id_types",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("namespace", sa.String(100), nullable=False),
    sa.Column("id_class", sa.String(16), nullable=False),  # primary | secondary | disabled
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("max_per_profile", sa.Integer, nullable=False),
)

blocked_values = sa.Table(
    "blocked_values",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # "*" blocks the value for every idType.
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ucid", sa.String(36), primary_key=True),
    sa.Column("region", sa.String(16), nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    # Set when this profile was merged away; it then resolves to its master.
    sa.Column("merged_into", sa.String(36), nullable=True),
    # JSON: {category: {attr: value, "_ts": "<epoch ms>"}}
    sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_profiles_merged_into", "org_id", "merged_into"),
)

profile_ids = sa.Table(
    "profile_ids",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("region", sa.String(16), primary_key=True),
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    # Always a master ucid: a merge moves ids, so lookups never chase links.
    sa.Column("ucid", sa.String(36), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_profile_ids_ucid", "org_id", "ucid"),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # Time-ordered id (epoch-ms hex + random), so the feed can be read in order per org.
    sa.Column("change_id", sa.String(40), primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("entity", sa.String(40), nullable=False),
    sa.Column("entity_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_changes_entity", "org_id", "entity", "entity_id"),
)

# --- CRM dialect (migration 0002) ---

crm_objects = sa.Table(
    "crm_objects",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # Custom objects only; the standard ones (people, companies) are built in.
    sa.Column("slug", sa.String(60), primary_key=True),
    sa.Column("singular_name", sa.String(255), nullable=False),
    sa.Column("plural_name", sa.String(255), nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
)

crm_attributes = sa.Table(
    "crm_attributes",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("object_slug", sa.String(60), primary_key=True),
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("is_unique", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_archived", sa.Boolean, nullable=False, server_default=sa.false()),
    # JSON: select/multiselect/status options [{id, value, color}]
    sa.Column("options", sa.Text, nullable=False, server_default="[]"),
    # JSON: type settings (relation target, currency display, ...)
    sa.Column("config", sa.Text, nullable=False, server_default="{}"),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
)

crm_records = sa.Table(
    "crm_records",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # "people", "companies" or a custom object's slug.
    sa.Column("object_slug", sa.String(60), primary_key=True),
    sa.Column("record_id", sa.String(36), primary_key=True),
    # Creation order within the object; "the oldest match" is the lowest.
    sa.Column("seq", sa.BigInteger, nullable=False),
    # JSON: {attribute key: stored value}
    sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    # Case-folded text the list endpoints' search looks in (record_store.fold_case).
    sa.Column("search_text", sa.Text, nullable=False, server_default=""),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    sa.Index("ix_crm_records_seq", "org_id", "object_slug", "seq"),
)

crm_values = sa.Table(
    "crm_values",
    metadata,
    # Every scalar attribute value of every record, so matching by any attribute is an index lookup.
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("object_slug", sa.String(60), primary_key=True),
    sa.Column("attribute_key", sa.String(80), primary_key=True),
    sa.Column("value", sa.String(1024), primary_key=True),
    sa.Column("record_id", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index("ix_crm_values_record", "org_id", "object_slug", "record_id"),
)

crm_unique_values = sa.Table(
    "crm_unique_values",
    metadata,
    # The values of isUnique attributes (and company domains): the primary key enforces uniqueness.
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("object_slug", sa.String(60), primary_key=True),
    sa.Column("attribute_key", sa.String(80), primary_key=True),
    sa.Column("value", sa.String(1024), primary_key=True),
    sa.Column("record_id", sa.String(36), nullable=False),
    sa.Index("ix_crm_unique_values_record", "org_id", "object_slug", "record_id"),
)

crm_person_emails = sa.Table(
    "crm_person_emails",
    metadata,
    # An email belongs to one person per org.
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("email_lower", sa.String(320), primary_key=True),
    sa.Column("person_id", sa.String(36), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # 0 is the primary email
    sa.Index("ix_crm_person_emails_person", "org_id", "person_id"),
)

# An org's request rate limits (``profilehub org rate-limit``); no row means no limit.
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("per_second", sa.Integer, nullable=True),
    sa.Column("per_minute", sa.Integer, nullable=True),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
)

# The first answer to each write sent with an ``Idempotency-Key``, replayed for 24 h (see
# profilehub.idempotency). Written in the transaction of the write it answers.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),  # sha256 of method, path, query, body
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),  # JSON [[name, value], ...]
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Index("ix_idempotency_keys_org_created", "org_id", "created_ts"),
)

# Console sign-ins (profilehub.console.sessions): a row per session, so signing out (or revoking
# the key or token it was made from) ends it at once. Only the sha256 of the session secret is kept.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("session_hash", sa.String(64), primary_key=True),
    # The credential signed in with (credentials.secret_hash): its grant is read on every request.
    sa.Column("credential_hash", sa.String(64), nullable=False),
    sa.Column("credential_kind", sa.String(16), nullable=False),  # "apikey" or "token"
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("expires_ts", sa.BigInteger, nullable=False),
)

# The journal (migration 0006): every applied profile write, to explain and undo merges
# (profilehub.store.journal_store). Kept with the person: keyed by the master the write landed
# on, so erasing a person's ucids erases its journal. Ids are stored as the write resolved them
# (hashed unless the org keeps raw ids).
profile_writes = sa.Table(
    "profile_writes",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ucid", sa.String(36), primary_key=True),
    # Microseconds from a clock taken under the scope's write lock: the order writes happened in.
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("region", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("created", sa.Boolean, nullable=False),
    sa.Column("named_ucid", sa.String(36), nullable=True),
    sa.Column("ids", sa.Text, nullable=False),  # JSON [[idType, value], ...]
    sa.Column("upsert", sa.Text, nullable=False),  # JSON, as validated
    sa.Column("merges", sa.Text, nullable=False, server_default="{}"),  # JSON {ucid: [idTypes]}
    sa.Column("released", sa.Text, nullable=True),  # JSON [[idType, value], ...]; None: none
)

# Ids a journaled write carried but did not attach to the profile it landed on (migration 0018;
# profilehub.store.journal_store): held by another profile (``id_owned_elsewhere``), over a limit,
# or evicted at once. Only such writes have rows: an erasure looks the erased person's ids up here
# (``ix_journal_unattached_id``) and takes them out of those journal rows of other people,
# without reading the org's journal. Keyed like the journal row, so its rows go with it.
journal_unattached = sa.Table(
    "journal_unattached",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ucid", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("region", sa.String(16), primary_key=True),
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),  # the journal row's, for retention
    sa.Index("ix_journal_unattached_id", "org_id", "region", "id_type", "value"),
)

# The consent ledger (migration 0015; profilehub.store.consent_ledger, docs/privacy.md): every
# value a write put in a profile's consent, in the transaction of the write. Keyed like the
# journal, by the master the write landed on and the write's ``seq`` (shared with its journal
# row), so erasing a person's ucids erases its ledger and an unmerge rebuilds it with the journal.
consent_ledger = sa.Table(
    "consent_ledger",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ucid", sa.String(36), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),  # order within the write
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("attribute", sa.String(200), nullable=False),
    sa.Column("value", sa.Text, nullable=True),  # JSON; NULL: the attribute was removed
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # api, bulk, import, crm, unmerge, merge
)

# How long an org keeps its journal (``profilehub org journal-retention``); no row: for ever.
journal_retention = sa.Table(
    "journal_retention",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("max_age_days", sa.Integer, nullable=True),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
)

# The values that deny consent, per org (``profilehub org consent-denials``, migration 0013); no
# row: the defaults (identity.consent.DEFAULT_CONSENT_DENIALS). On a merge a denial wins.
consent_settings = sa.Table(
    "consent_settings",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("denials", sa.Text, nullable=False),  # JSON array of trimmed, lower-cased values
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
)

# --- change delivery (migration 0007; see profilehub.store.events and docs/events.md) ---

# The outbox: one row per committed change, written in the transaction of the change.
events = sa.Table(
    "events",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # The cursor: unique in the database and allocated in commit order (see event_sequence).
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("feed", sa.String(8), nullable=False),  # "cdp" or "crm": which pull feed carries it
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("region", sa.String(16), nullable=True),  # CDP events only
    sa.Column("ts", sa.BigInteger, nullable=False),
    # What delivery keeps in order per endpoint: the profile's ucid, the person's or record's id.
    sa.Column("entity_id", sa.String(64), nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON
    sa.Index("ix_events_feed", "org_id", "feed", "event_id"),
    sa.Index("ix_events_entity", "org_id", "entity_id"),  # what an erasure deletes
)

# The last event id handed out, one row. Taking it (an UPDATE) is the last thing a writing
# transaction does and holds the row until commit, so ids are allocated in commit order and a
# reader past id N can never later see an id below N commit (see docs/events.md#cursors).
event_sequence = sa.Table(
    "event_sequence",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)


# --- push delivery ---
# Delivery state lives in the database, not in a process, so ``profilehub deliver`` can run on any
# host, several at once, and pick up after a crash: each endpoint (and each stream of an org) is
# worked by one process at a time, the holder of its lease (``lease_owner`` until ``lease_until``).
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # "wh_<orgId>_<random>": the org is in the id, so commands need no --org-id besides it.
    sa.Column("endpoint_id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    # Comma-separated event types; empty: every type.
    sa.Column("event_types", sa.Text, nullable=False, server_default=""),
    # The Standard Webhooks signing secret (whsec_...). Signing needs the secret itself, so it is
    # stored as given, not hashed: the database is as sensitive as the secrets it holds.
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("disabled_ts", sa.BigInteger, nullable=True),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    # The last event handled: delivered, skipped (another type), or parked in webhook_pending.
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
    # Since when deliveries fail without a success in between (None: the last one succeeded).
    sa.Column("failing_since", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.BigInteger, nullable=True),
)

# Events an endpoint has not taken yet: failed ones waiting for their next attempt, and the later
# events of the same ordering key (a profile, a person...) queued behind them.
webhook_pending = sa.Table(
    "webhook_pending",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("endpoint_id", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ordering_key", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the event JSON, sent as is on every attempt
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_ts", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_webhook_pending_key", "org_id", "endpoint_id", "ordering_key", "event_id"),
    sa.Index("ix_webhook_pending_due", "org_id", "endpoint_id", "next_attempt_ts"),
)

# How far a stream (NATS JetStream) has published each org's events.
stream_cursors = sa.Table(
    "stream_cursors",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("published", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.BigInteger, nullable=True),
)

# Each run of ``profilehub import`` (a process of its own), its counts updated as it goes, so that
# ``serve``'s ``/metrics`` can show imports in progress (profilehub.ingest.progress).
import_runs = sa.Table(
    "import_runs",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # cdp, people
    sa.Column("source", sa.String(255), nullable=False),  # the file's name, not its path
    sa.Column("state", sa.String(16), nullable=False),  # running, done, interrupted, stopped, failed
    sa.Column("source_bytes", sa.BigInteger, nullable=False),
    sa.Column("read_bytes", sa.BigInteger, nullable=False),
    sa.Column("records_read", sa.BigInteger, nullable=False),
    sa.Column("records_created", sa.BigInteger, nullable=False),
    sa.Column("records_updated", sa.BigInteger, nullable=False),
    sa.Column("records_rejected", sa.BigInteger, nullable=False),
    sa.Column("started_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    sa.Column("finished_ts", sa.BigInteger, nullable=True),
    sa.Index("ix_import_runs_org_updated", "org_id", "updated_ts"),
)

# Each org's secret key for suppression fingerprints (HMAC-SHA256), made with the org (or, for
# an org older than suppression, at its first erasure). Never leaves the server.
suppression_keys = sa.Table(
    "suppression_keys",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(64), nullable=False),  # hex
    sa.Column("created_ts", sa.BigInteger, nullable=False),
)

# Keyed fingerprints of erased ids (never the values): writes carrying one drop it
# (profilehub.identity.suppression, docs/privacy.md).
suppressed_ids = sa.Table(
    "suppressed_ids",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("region", sa.String(16), primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),  # HMAC-SHA256, hex
    sa.Column("created_ts", sa.BigInteger, nullable=False),
)

# --- erasure receipts (migration 0012; profilehub.store.receipt_store, docs/privacy.md) ---

# Each org's Ed25519 key that signs its erasure receipts. ``private_key`` is PKCS#8 PEM, encrypted
# with PROFILEHUB_RECEIPT_KEY_PASSPHRASE when that was set as the key was made (else in the clear):
# whoever reads this column without the passphrase can sign receipts in the org's name.
receipt_keys = sa.Table(
    "receipt_keys",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_id", sa.String(16), nullable=False),  # receipts.key_id of the public key
    sa.Column("public_key", sa.String(64), nullable=False),  # base64 of the 32 raw bytes
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
)

# One signed receipt per erasure (``_delete``), written in the erasure's transaction. It names the
# erased ucids and counts, never a value or id of the person.
erasure_receipts = sa.Table(
    "erasure_receipts",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("receipt_id", sa.String(36), primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the receipt JSON as signed, signature included
)
