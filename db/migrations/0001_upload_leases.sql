ALTER TABLE "manifest_children" DROP CONSTRAINT "manifest_children_child_id_manifests_id_fk";
--> statement-breakpoint
ALTER TABLE "upload_sessions" ADD COLUMN "tail_key" text;--> statement-breakpoint
ALTER TABLE "upload_sessions" ADD COLUMN "busy_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "manifest_children" ADD CONSTRAINT "manifest_children_child_id_manifests_id_fk" FOREIGN KEY ("child_id") REFERENCES "public"."manifests"("id") ON DELETE cascade ON UPDATE no action;