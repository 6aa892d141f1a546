CREATE TABLE ui_sessions (id_hash TEXT PRIMARY KEY, token_hash TEXT NOT NULL, user_id TEXT NOT NULL, csrf TEXT NOT NULL, created_at_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL, ended_at_ms BIGINT);
CREATE INDEX ui_sessions_last_seen ON ui_sessions(last_seen_ms);
