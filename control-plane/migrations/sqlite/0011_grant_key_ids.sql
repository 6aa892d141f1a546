-- What lets the control plane send a grant without its Ed25519 signature:
-- the signing key ids of the gate keys a relay holds (space-separated) and
-- the key id of each tunnel's cluster grant key (empty: none).
ALTER TABLE relays ADD COLUMN gate_key_ids TEXT NOT NULL DEFAULT '';
ALTER TABLE relay_tunnels ADD COLUMN cluster_grant_key_id TEXT NOT NULL DEFAULT '';
