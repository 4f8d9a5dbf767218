-- Every change to what authorization reads bumps access_version in the same transaction
-- (statement-level triggers, so a bulk change bumps once). API processes cache authorization
-- per access version (auth/access-cache.ts); mirror_configs bumps only when its robot or
-- repository changes, not on every sync status update.
INSERT INTO "access_version" ("id", "version") VALUES (1, 0) ON CONFLICT DO NOTHING;
--> statement-breakpoint
CREATE FUNCTION "bump_access_version"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE "access_version" SET "version" = "version" + 1 WHERE "id" = 1;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "users_access_version" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "users" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "robots_access_version" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "robots" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "namespaces_access_version" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "namespaces" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "namespace_members_access_version" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "namespace_members" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "repositories_access_version" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "repositories" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "repository_permissions_access_version" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "repository_permissions" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "mirror_configs_access_version" AFTER INSERT OR DELETE OR TRUNCATE ON "mirror_configs" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
--> statement-breakpoint
CREATE TRIGGER "mirror_configs_robot_access_version" AFTER UPDATE OF "robot_id", "repository_id" ON "mirror_configs" FOR EACH STATEMENT EXECUTE FUNCTION "bump_access_version"();
