CREATE TABLE chat_plans (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), cluster_id TEXT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL, command_line TEXT NOT NULL, risk TEXT NOT NULL, body_json TEXT NOT NULL, body_hash TEXT NOT NULL, confirmation_hash TEXT NOT NULL, type_to_confirm TEXT, needs_approval BIGINT NOT NULL, approved_by TEXT, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT);
CREATE INDEX chat_plans_expiry ON chat_plans(expires_at);
ALTER TABLE chat_plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat_plans FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chat_plans USING (current_setting('kubechat.platform', true) = 'on' OR tenant_id = current_setting('kubechat.tenant', true)) WITH CHECK (current_setting('kubechat.platform', true) = 'on' OR tenant_id = current_setting('kubechat.tenant', true));
