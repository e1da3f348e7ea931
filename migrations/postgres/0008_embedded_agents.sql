-- The embedded agent of `kiln serve --workers N` in the registry (issue 12): `embedded_in` names
-- the server process that runs it (`HOST pid N`), NULL for an agent made by `kiln agent create`.
-- An embedded agent has no token (no other process may act as it): its `token_hash` is
-- `embedded:NAME`, which no token's SHA-256 hex equals.
ALTER TABLE agents ADD COLUMN embedded_in TEXT;
