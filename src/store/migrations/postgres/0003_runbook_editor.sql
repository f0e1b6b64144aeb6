-- Who made the runbook version behind an action (issue #11): the rules
-- ConfigMap's `autopilot.payments.io/changed-by` annotation, which the
-- chart's admission policy holds equal to the user who wrote it. NULL for a
-- runbook from a folder, an editor unknown (admission off), and rows written
-- before this migration.
ALTER TABLE journal ADD COLUMN runbook_editor TEXT;

-- Every runbook version the agent has loaded, keyed by the SHA-256 of its
-- source: the first editor seen for a version is kept, so a restart, or a
-- later edit of another runbook in the same ConfigMap, cannot change who
-- made it.
CREATE TABLE runbook_versions (
    hash       TEXT   PRIMARY KEY,
    runbook    TEXT   NOT NULL,
    editor     TEXT,
    first_seen BIGINT NOT NULL
);

-- Approved actions per runbook version (AutopilotPolicy newRunbookApprovals)
-- are counted every cycle.
CREATE INDEX journal_runbook_hash ON journal (runbook_hash);
