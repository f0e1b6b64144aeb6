-- Sharded agents (issue #16): each shard elects its own leader under its own
-- Lease, all on this one journal, so the leader epoch is kept per Lease. An
-- agent of an earlier version, which reads the single row of the old table,
-- now fails to journal anything (fail closed) until it is upgraded; the new
-- leader of each Lease starts again at epoch 1.
DROP TABLE leader_epoch;
CREATE TABLE leader_epoch (
    lease TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    at BIGINT NOT NULL
);
