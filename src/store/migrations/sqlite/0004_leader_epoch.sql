-- The leader epoch (see the PostgreSQL migration). A SQLite journal has one
-- replica, so the table stays empty; it exists so both schemas match.
CREATE TABLE leader_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    holder TEXT NOT NULL,
    at INTEGER NOT NULL
);
