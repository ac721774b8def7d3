-- The blog post's table. AUTOINCREMENT keeps SQLite from reusing the id of a
-- deleted row: a reused id could be served a deleted user's cached entry if
-- that entry's eviction had failed (Redis down at the time of the delete).
CREATE TABLE users (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT    NOT NULL,
    email    TEXT    NOT NULL UNIQUE
);
