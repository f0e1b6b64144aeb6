-- The leader epoch per Lease (see the PostgreSQL migration). A SQLite
-- journal has one replica, so the table stays empty; it exists so both
-- schemas match.
DROP TABLE leader_epoch;
CREATE TABLE leader_epoch (
    lease TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    holder TEXT NOT NULL,
    at INTEGER NOT NULL
);
