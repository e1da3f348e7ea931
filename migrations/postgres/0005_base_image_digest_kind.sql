-- What a base image's stored digest is (issue 11): `repo-digest` (a registry's manifest digest,
-- what polls and notifications compare with) or `image-id` (the engine's local ID of a base no
-- registry knows). NULL: an empty digest, or a row of an older release, which kept registry
-- digests only.
ALTER TABLE base_images ADD COLUMN digest_kind TEXT;
