-- One row per action: the intent is inserted before anything is sent; the
-- dry-run result, outcome, verification and approval are filled in later.
CREATE TABLE journal (
    id             BIGSERIAL PRIMARY KEY,
    at             BIGINT  NOT NULL,
    runbook        TEXT    NOT NULL,
    runbook_hash   TEXT    NOT NULL,
    trigger        TEXT    NOT NULL,
    evidence       TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    action_kind    TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    namespace      TEXT    NOT NULL,
    patch          TEXT,
    inverse        TEXT,
    disruptive     BOOLEAN NOT NULL,
    mode           TEXT    NOT NULL,
    verdict        TEXT    NOT NULL,
    verdict_detail TEXT    NOT NULL,
    verify         TEXT,
    undo_of        BIGINT REFERENCES journal (id),
    dry_run        TEXT,
    outcome        TEXT,
    outcome_detail TEXT,
    outcome_at     BIGINT,
    verification   TEXT,
    approval       TEXT
);
CREATE INDEX journal_at ON journal (at);
CREATE INDEX journal_outcome ON journal (outcome);
