CREATE TABLE "gc_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"workflow_id" text NOT NULL,
	"run_id" text NOT NULL,
	"dry_run" boolean NOT NULL,
	"outcome" text NOT NULL,
	"started_at" timestamp with time zone NOT NULL,
	"finished_at" timestamp with time zone DEFAULT now() NOT NULL,
	"report" jsonb NOT NULL,
	"error" text
);
--> statement-breakpoint
ALTER TABLE "namespaces" ADD COLUMN "gc_grace_seconds" integer;--> statement-breakpoint
CREATE UNIQUE INDEX "gc_runs_run_key" ON "gc_runs" USING btree ("run_id");--> statement-breakpoint
CREATE INDEX "gc_runs_finished_idx" ON "gc_runs" USING btree ("dry_run","finished_at");