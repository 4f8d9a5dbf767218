CREATE TABLE "blob_version" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"version" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "blob_version_single_row" CHECK ("blob_version"."id" = 1)
);
