ALTER TABLE "mirror_runs" ADD COLUMN "tags_before" jsonb;--> statement-breakpoint
ALTER TABLE "mirror_runs" ADD COLUMN "planned_tags" text[];--> statement-breakpoint
ALTER TABLE "mirror_runs" ADD COLUMN "trigger" text;