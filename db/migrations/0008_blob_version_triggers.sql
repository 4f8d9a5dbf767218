-- Every deletion of a blob or of a repository's link to one bumps blob_version in the same
-- transaction (statement-level triggers, so a bulk delete bumps once; cascades from a deleted
-- repository fire them too). API processes cache which blobs a repository may use per blob
-- version (registry/blob-server.ts); inserts do not bump it, since only blobs found are cached.
INSERT INTO "blob_version" ("id", "version") VALUES (1, 0) ON CONFLICT DO NOTHING;
--> statement-breakpoint
CREATE FUNCTION "bump_blob_version"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE "blob_version" SET "version" = "version" + 1 WHERE "id" = 1;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "blobs_blob_version" AFTER DELETE OR TRUNCATE ON "blobs" FOR EACH STATEMENT EXECUTE FUNCTION "bump_blob_version"();
--> statement-breakpoint
CREATE TRIGGER "repository_blobs_blob_version" AFTER DELETE OR TRUNCATE ON "repository_blobs" FOR EACH STATEMENT EXECUTE FUNCTION "bump_blob_version"();
