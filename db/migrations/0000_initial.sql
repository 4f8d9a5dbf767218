CREATE TABLE "blob_placements" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"blob_id" bigint NOT NULL,
	"location_id" bigint NOT NULL,
	"state" text DEFAULT 'available' NOT NULL,
	"verified_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "blobs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"digest" text NOT NULL,
	"size" bigint NOT NULL,
	"media_type" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "manifest_blobs" (
	"manifest_id" bigint NOT NULL,
	"blob_id" bigint NOT NULL,
	CONSTRAINT "manifest_blobs_manifest_id_blob_id_pk" PRIMARY KEY("manifest_id","blob_id")
);
--> statement-breakpoint
CREATE TABLE "manifest_children" (
	"parent_id" bigint NOT NULL,
	"child_id" bigint NOT NULL,
	CONSTRAINT "manifest_children_parent_id_child_id_pk" PRIMARY KEY("parent_id","child_id")
);
--> statement-breakpoint
CREATE TABLE "manifests" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"repository_id" bigint NOT NULL,
	"digest" text NOT NULL,
	"media_type" text NOT NULL,
	"artifact_type" text,
	"subject_digest" text,
	"annotations" jsonb,
	"size" integer NOT NULL,
	"content" "bytea" NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "mirror_configs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"repository_id" bigint NOT NULL,
	"is_enabled" boolean DEFAULT true NOT NULL,
	"external_reference" text NOT NULL,
	"username" text,
	"password_enc" "bytea",
	"sync_interval" integer NOT NULL,
	"sync_start_date" timestamp with time zone NOT NULL,
	"tag_globs" text[] NOT NULL,
	"robot_id" bigint,
	"verify_tls" boolean DEFAULT true NOT NULL,
	"unsigned_images" boolean DEFAULT false NOT NULL,
	"proxy" jsonb,
	"rollback_on_failure" boolean NOT NULL,
	"sync_status" text DEFAULT 'NEVER_RUN' NOT NULL,
	"sync_expiration_date" timestamp with time zone,
	"sync_retries_remaining" integer DEFAULT 3 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "mirror_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"config_id" bigint NOT NULL,
	"workflow_id" text NOT NULL,
	"run_id" text NOT NULL,
	"status" text NOT NULL,
	"reason" text,
	"tag_results" jsonb,
	"bytes" bigint DEFAULT 0 NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "namespace_members" (
	"namespace_id" bigint NOT NULL,
	"user_id" bigint NOT NULL,
	"role" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "namespace_members_namespace_id_user_id_pk" PRIMARY KEY("namespace_id","user_id")
);
--> statement-breakpoint
CREATE TABLE "namespaces" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"kind" text NOT NULL,
	"replication_locations" text[],
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "outbox" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"payload" jsonb NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"available_at" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "repositories" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"namespace_id" bigint NOT NULL,
	"name" text NOT NULL,
	"visibility" text DEFAULT 'private' NOT NULL,
	"state" text DEFAULT 'normal' NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "repository_blobs" (
	"repository_id" bigint NOT NULL,
	"blob_id" bigint NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "repository_blobs_repository_id_blob_id_pk" PRIMARY KEY("repository_id","blob_id")
);
--> statement-breakpoint
CREATE TABLE "repository_permissions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"repository_id" bigint NOT NULL,
	"user_id" bigint,
	"robot_id" bigint,
	"role" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "repository_permissions_one_grantee" CHECK (("repository_permissions"."user_id" is null) <> ("repository_permissions"."robot_id" is null))
);
--> statement-breakpoint
CREATE TABLE "robots" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"namespace_id" bigint NOT NULL,
	"short_name" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"token_hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "storage_locations" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"region" text NOT NULL,
	"endpoint" text NOT NULL,
	"s3_region" text DEFAULT 'us-east-1' NOT NULL,
	"bucket" text NOT NULL,
	"path_prefix" text DEFAULT '' NOT NULL,
	"credentials_ref" text NOT NULL,
	"access_key_enc" "bytea",
	"secret_key_enc" "bytea",
	"replicate_by_default" boolean DEFAULT true NOT NULL,
	"state" text DEFAULT 'active' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tags" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"repository_id" bigint NOT NULL,
	"name" text NOT NULL,
	"manifest_id" bigint NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tokens" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"token_hash" text NOT NULL,
	"user_id" bigint,
	"robot_id" bigint,
	"expires_at" timestamp with time zone,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tokens_one_owner" CHECK (("tokens"."user_id" is null) <> ("tokens"."robot_id" is null))
);
--> statement-breakpoint
CREATE TABLE "upload_sessions" (
	"id" uuid PRIMARY KEY NOT NULL,
	"repository_id" bigint NOT NULL,
	"location_id" bigint NOT NULL,
	"object_key" text NOT NULL,
	"multipart_upload_id" text,
	"parts" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"size" bigint DEFAULT 0 NOT NULL,
	"tail_size" integer DEFAULT 0 NOT NULL,
	"hash_algorithm" text DEFAULT 'sha256' NOT NULL,
	"hash_state" "bytea",
	"version" integer DEFAULT 0 NOT NULL,
	"created_by_user_id" bigint,
	"created_by_robot_id" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"username" text NOT NULL,
	"email" text,
	"password_hash" text,
	"namespace_id" bigint NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_subscriptions" (
	"id" uuid PRIMARY KEY NOT NULL,
	"repository_id" bigint NOT NULL,
	"event" text NOT NULL,
	"method" text DEFAULT 'webhook' NOT NULL,
	"title" text DEFAULT '' NOT NULL,
	"url" text NOT NULL,
	"secret_enc" "bytea" NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "blob_placements" ADD CONSTRAINT "blob_placements_blob_id_blobs_id_fk" FOREIGN KEY ("blob_id") REFERENCES "public"."blobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "blob_placements" ADD CONSTRAINT "blob_placements_location_id_storage_locations_id_fk" FOREIGN KEY ("location_id") REFERENCES "public"."storage_locations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "manifest_blobs" ADD CONSTRAINT "manifest_blobs_manifest_id_manifests_id_fk" FOREIGN KEY ("manifest_id") REFERENCES "public"."manifests"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "manifest_blobs" ADD CONSTRAINT "manifest_blobs_blob_id_blobs_id_fk" FOREIGN KEY ("blob_id") REFERENCES "public"."blobs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "manifest_children" ADD CONSTRAINT "manifest_children_parent_id_manifests_id_fk" FOREIGN KEY ("parent_id") REFERENCES "public"."manifests"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "manifest_children" ADD CONSTRAINT "manifest_children_child_id_manifests_id_fk" FOREIGN KEY ("child_id") REFERENCES "public"."manifests"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "manifests" ADD CONSTRAINT "manifests_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "mirror_configs" ADD CONSTRAINT "mirror_configs_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "mirror_configs" ADD CONSTRAINT "mirror_configs_robot_id_robots_id_fk" FOREIGN KEY ("robot_id") REFERENCES "public"."robots"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "mirror_runs" ADD CONSTRAINT "mirror_runs_config_id_mirror_configs_id_fk" FOREIGN KEY ("config_id") REFERENCES "public"."mirror_configs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "namespace_members" ADD CONSTRAINT "namespace_members_namespace_id_namespaces_id_fk" FOREIGN KEY ("namespace_id") REFERENCES "public"."namespaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "namespace_members" ADD CONSTRAINT "namespace_members_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "repositories" ADD CONSTRAINT "repositories_namespace_id_namespaces_id_fk" FOREIGN KEY ("namespace_id") REFERENCES "public"."namespaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "repository_blobs" ADD CONSTRAINT "repository_blobs_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "repository_blobs" ADD CONSTRAINT "repository_blobs_blob_id_blobs_id_fk" FOREIGN KEY ("blob_id") REFERENCES "public"."blobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "repository_permissions" ADD CONSTRAINT "repository_permissions_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "repository_permissions" ADD CONSTRAINT "repository_permissions_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "repository_permissions" ADD CONSTRAINT "repository_permissions_robot_id_robots_id_fk" FOREIGN KEY ("robot_id") REFERENCES "public"."robots"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "robots" ADD CONSTRAINT "robots_namespace_id_namespaces_id_fk" FOREIGN KEY ("namespace_id") REFERENCES "public"."namespaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tags" ADD CONSTRAINT "tags_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tags" ADD CONSTRAINT "tags_manifest_id_manifests_id_fk" FOREIGN KEY ("manifest_id") REFERENCES "public"."manifests"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tokens" ADD CONSTRAINT "tokens_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tokens" ADD CONSTRAINT "tokens_robot_id_robots_id_fk" FOREIGN KEY ("robot_id") REFERENCES "public"."robots"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "upload_sessions" ADD CONSTRAINT "upload_sessions_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "upload_sessions" ADD CONSTRAINT "upload_sessions_location_id_storage_locations_id_fk" FOREIGN KEY ("location_id") REFERENCES "public"."storage_locations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "users" ADD CONSTRAINT "users_namespace_id_namespaces_id_fk" FOREIGN KEY ("namespace_id") REFERENCES "public"."namespaces"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_subscriptions" ADD CONSTRAINT "webhook_subscriptions_repository_id_repositories_id_fk" FOREIGN KEY ("repository_id") REFERENCES "public"."repositories"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "blob_placements_blob_location_key" ON "blob_placements" USING btree ("blob_id","location_id");--> statement-breakpoint
CREATE INDEX "blob_placements_location_idx" ON "blob_placements" USING btree ("location_id","blob_id");--> statement-breakpoint
CREATE UNIQUE INDEX "blobs_digest_key" ON "blobs" USING btree ("digest");--> statement-breakpoint
CREATE INDEX "manifest_blobs_blob_idx" ON "manifest_blobs" USING btree ("blob_id");--> statement-breakpoint
CREATE INDEX "manifest_children_child_idx" ON "manifest_children" USING btree ("child_id");--> statement-breakpoint
CREATE UNIQUE INDEX "manifests_repository_digest_key" ON "manifests" USING btree ("repository_id","digest");--> statement-breakpoint
CREATE INDEX "manifests_subject_idx" ON "manifests" USING btree ("repository_id","subject_digest");--> statement-breakpoint
CREATE UNIQUE INDEX "mirror_configs_repository_key" ON "mirror_configs" USING btree ("repository_id");--> statement-breakpoint
CREATE UNIQUE INDEX "mirror_runs_run_key" ON "mirror_runs" USING btree ("run_id");--> statement-breakpoint
CREATE INDEX "mirror_runs_config_idx" ON "mirror_runs" USING btree ("config_id","started_at");--> statement-breakpoint
CREATE UNIQUE INDEX "namespaces_name_key" ON "namespaces" USING btree ("name");--> statement-breakpoint
CREATE INDEX "outbox_pending_idx" ON "outbox" USING btree ("available_at","id") WHERE "outbox"."delivered_at" is null;--> statement-breakpoint
CREATE UNIQUE INDEX "repositories_namespace_name_key" ON "repositories" USING btree ("namespace_id","name");--> statement-breakpoint
CREATE INDEX "repository_blobs_blob_idx" ON "repository_blobs" USING btree ("blob_id");--> statement-breakpoint
CREATE UNIQUE INDEX "repository_permissions_user_key" ON "repository_permissions" USING btree ("repository_id","user_id") WHERE "repository_permissions"."user_id" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "repository_permissions_robot_key" ON "repository_permissions" USING btree ("repository_id","robot_id") WHERE "repository_permissions"."robot_id" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "robots_namespace_short_key" ON "robots" USING btree ("namespace_id","short_name");--> statement-breakpoint
CREATE UNIQUE INDEX "storage_locations_name_key" ON "storage_locations" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "tags_repository_name_key" ON "tags" USING btree ("repository_id","name");--> statement-breakpoint
CREATE INDEX "tags_manifest_idx" ON "tags" USING btree ("manifest_id");--> statement-breakpoint
CREATE UNIQUE INDEX "tokens_hash_key" ON "tokens" USING btree ("token_hash");--> statement-breakpoint
CREATE INDEX "upload_sessions_updated_idx" ON "upload_sessions" USING btree ("updated_at");--> statement-breakpoint
CREATE UNIQUE INDEX "users_username_key" ON "users" USING btree ("username");--> statement-breakpoint
CREATE UNIQUE INDEX "users_namespace_key" ON "users" USING btree ("namespace_id");--> statement-breakpoint
CREATE INDEX "webhook_subscriptions_repository_idx" ON "webhook_subscriptions" USING btree ("repository_id","event");