-- Every action gets an ID no other journal will ever give (a ULID): it is
-- what the agent writes on the objects it patches and what approvals name,
-- so a new journal (a rescheduled pod, a restore) never mistakes an old
-- object's tag or an old approval for one of its own rows. Rows written
-- before this migration get a random one.
ALTER TABLE journal ADD COLUMN uid TEXT;
UPDATE journal SET uid = 'legacy-' || md5(random()::text || id::text) WHERE uid IS NULL;
ALTER TABLE journal ALTER COLUMN uid SET NOT NULL;
CREATE UNIQUE INDEX journal_uid ON journal (uid);
