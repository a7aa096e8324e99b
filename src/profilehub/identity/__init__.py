"""Identity: the pure core of normalising, hashing, resolving and merging identifiers into profiles
(no SQL: storage reaches it through ``identity.storage``; see docs/identity.md, "For maintainers")."""
