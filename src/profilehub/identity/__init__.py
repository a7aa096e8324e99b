"""Identity: normalising, hashing, resolving and merging identifiers into profiles."""
