CREATE TABLE relays (relay_id TEXT PRIMARY KEY, region TEXT NOT NULL, internal_address TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL, lease_expires_at_ms BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE relay_tunnels (relay_id TEXT NOT NULL, tunnel_id BIGINT NOT NULL, tenant_id TEXT NOT NULL, cluster_id TEXT NOT NULL, agent_id TEXT NOT NULL, agent_version TEXT NOT NULL, transport TEXT NOT NULL, remote_addr TEXT NOT NULL, connected_at_ms BIGINT NOT NULL, certificate_serial TEXT NOT NULL, PRIMARY KEY (relay_id, tunnel_id));
CREATE INDEX relay_tunnels_cluster ON relay_tunnels(tenant_id, cluster_id);
CREATE TABLE agent_certificates (serial TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, cluster_id TEXT NOT NULL, issued_at BIGINT NOT NULL, not_after BIGINT NOT NULL, revoked_at BIGINT, replaced_by TEXT);
CREATE INDEX agent_certificates_cluster ON agent_certificates(tenant_id, cluster_id);
