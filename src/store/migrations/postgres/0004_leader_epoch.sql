-- The leader epoch: a new leader increments it before it resolves or sends
-- anything, and every intent is journaled in a transaction that first reads
-- it (FOR SHARE) and refuses if it is not the journaling replica's own. So a
-- deposed leader that wakes up journals, and so sends, nothing new; and a
-- new leader's increment waits for an old leader's intent in flight, which
-- it then sees among the unresolved.
CREATE TABLE leader_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    at BIGINT NOT NULL
);
