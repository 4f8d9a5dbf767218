ALTER TABLE "blob_placements" ADD COLUMN "purge_owner" text;--> statement-breakpoint
ALTER TABLE "blob_placements" ADD COLUMN "purge_claimed_at" timestamp with time zone;