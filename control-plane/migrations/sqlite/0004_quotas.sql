CREATE TABLE command_counters (tenant_id TEXT NOT NULL, month TEXT NOT NULL, commands BIGINT NOT NULL, PRIMARY KEY (tenant_id, month));
CREATE TABLE kubectl_sessions (tenant_id TEXT NOT NULL, session_id TEXT NOT NULL, first_seen_ms BIGINT NOT NULL, PRIMARY KEY (tenant_id, session_id));
CREATE TABLE audit_checkpoints (tenant_id TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, created_at BIGINT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (tenant_id, seq));
