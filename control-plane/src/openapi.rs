//! The OpenAPI document served at `/v1/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, ok: &str) -> Value {
    json!({"summary": summary, "security": [{"bearer": []}], "responses": {
        ok: {"description": "success"},
        "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
        "409": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"},
        "429": {"$ref": "#/components/responses/Error"}}})
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "KubeChat control plane", "version": "v1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API token, kc_…"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}}}}
        },
        "paths": {
            "/v1/grant-keys": {"get": {"summary": "the grant-verification public keys (for relays' and agents' --grant-key)", "responses": {"200": {"description": "keys"}}}},
            "/v1/tenants": {"post": op("onboard a tenant (platform admin): tenant, first admin, token", "201"), "get": op("list tenants visible to the caller", "200")},
            "/v1/tenants/{id}": {"get": op("get a tenant", "200"), "put": op("update a tenant", "200"), "delete": op("offboard: purge everything of the tenant, revoke its clusters", "200")},
            "/v1/tenants/{id}/settings": {"get": op("get settings", "200"), "put": op("replace settings", "200")},
            "/v1/tenants/{id}/usage": {"get": op("counts against the plan", "200")},
            "/v1/tenants/{id}/users": {"post": op("add a user (plan maxUsers)", "201"), "get": op("list users", "200")},
            "/v1/tenants/{id}/users/{userId}": {"get": op("get a user", "200"), "put": op("change name or role", "200"), "delete": op("remove a user and their tokens", "200")},
            "/v1/tenants/{id}/tokens": {"post": op("create an API token (shown once)", "201"), "get": op("list tokens (metadata only)", "200")},
            "/v1/tenants/{id}/tokens/{tokenId}": {"delete": op("revoke a token", "200")},
            "/v1/tenants/{id}/cross-tenant-access": {"post": op("grant a user of another tenant (email + tenant slug) a role here", "201"), "get": op("list grants", "200")},
            "/v1/tenants/{id}/cross-tenant-access/{grantId}": {"delete": op("revoke a grant", "200")},
            "/v1/tenants/{id}/clusters": {"post": op("register a cluster (plan maxClusters); answers a one-time bootstrap token with helmInstall (a shell snippet), helmValues and helmChart", "201"), "get": op("list clusters", "200")},
            "/v1/tenants/{id}/clusters/{clusterId}/kubeconfig": {"get": op("a kubeconfig for this cluster carrying the caller's token", "200")},
            "/v1/tenants/{id}/clusters/{clusterId}": {"get": op("get a cluster", "200"), "put": op("change labels or policy", "200"), "delete": op("delete a cluster and revoke its credentials", "200")}
        }
    })
}
