CREATE TABLE cache_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL, at_ms BIGINT NOT NULL);
CREATE INDEX cache_changes_at ON cache_changes(at_ms);
