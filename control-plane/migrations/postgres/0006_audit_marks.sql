ALTER TABLE audit_events ADD COLUMN truncated_json TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_events_request ON audit_events(tenant_id, request_id);
ALTER TABLE kubectl_sessions ADD COLUMN window_start_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE kubectl_sessions ADD COLUMN requests BIGINT NOT NULL DEFAULT 0;
