//! The control plane's model, keeping the seed's names and fields where they
//! fit: TenantOrganization, Subscription, UsageLimits, SaaSUser, TenantRole,
//! CrossTenantAccess, clusters and API tokens.

use serde::{Deserialize, Serialize};

/// A tenant's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Paying and served.
    Active,
    /// Refused everywhere until reactivated.
    Suspended,
    /// Served, on trial.
    Trial,
    /// Left; kept only until purged.
    Churned,
}

impl TenantStatus {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Trial => "trial",
            Self::Churned => "churned",
        }
    }
    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "trial" => Self::Trial,
            "churned" => Self::Churned,
            _ => return None,
        })
    }
}

/// A subscription plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Free tier.
    Free,
    /// Team tier.
    Team,
    /// Enterprise tier.
    Enterprise,
}

/// What a plan allows (the seed's UsageLimits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageLimits {
    /// Users in the tenant.
    pub max_users: i64,
    /// Clusters in the tenant.
    pub max_clusters: i64,
    /// kubectl commands per month.
    pub max_commands_per_month: i64,
    /// Days audit events are kept.
    pub max_audit_retention_days: i64,
}

impl Plan {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Team => "team",
            Self::Enterprise => "enterprise",
        }
    }
    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "free" => Self::Free,
            "team" => Self::Team,
            "enterprise" => Self::Enterprise,
            _ => return None,
        })
    }
    /// The plan's limits.
    pub fn limits(self) -> UsageLimits {
        match self {
            Self::Free => UsageLimits {
                max_users: 3,
                max_clusters: 1,
                max_commands_per_month: 1_000,
                max_audit_retention_days: 7,
            },
            Self::Team => UsageLimits {
                max_users: 50,
                max_clusters: 20,
                max_commands_per_month: 100_000,
                max_audit_retention_days: 90,
            },
            Self::Enterprise => UsageLimits {
                max_users: 10_000,
                max_clusters: 1_000,
                max_commands_per_month: 10_000_000,
                max_audit_retention_days: 365,
            },
        }
    }
}

/// A tenant's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The plan.
    pub plan: Plan,
    /// The plan's limits (stored, so a contract can differ from the list).
    pub limits: UsageLimits,
    /// `monthly` or `yearly`.
    pub billing_cycle: String,
    /// YYYY-MM-DD.
    pub next_billing_date: String,
}

/// A tenant organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Id, e.g. `t1a2b3c4d5e6`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// URL-safe unique name.
    pub slug: String,
    /// Email domain, if any.
    pub domain: Option<String>,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Region whose relays carry the tenant's traffic.
    pub home_region: String,
    /// Free-form settings.
    pub settings: serde_json::Value,
    /// Subscription.
    pub subscription: Subscription,
    /// Unix seconds.
    pub created_at: i64,
}

/// A person's role in a tenant (the seed's TenantRole), or the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operates the whole platform.
    PlatformAdmin,
    /// Manages one tenant.
    TenantAdmin,
    /// Reads and writes in allowed namespaces.
    TenantUser,
    /// Reads.
    TenantViewer,
}

impl Role {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform_admin",
            Self::TenantAdmin => "tenant_admin",
            Self::TenantUser => "tenant_user",
            Self::TenantViewer => "tenant_viewer",
        }
    }
    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "platform_admin" => Self::PlatformAdmin,
            "tenant_admin" => Self::TenantAdmin,
            "tenant_user" => Self::TenantUser,
            "tenant_viewer" => Self::TenantViewer,
            _ => return None,
        })
    }
}

/// A user (the seed's SaaSUser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Id.
    pub id: String,
    /// Tenant (none for platform admins).
    pub tenant_id: Option<String>,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Unix seconds.
    pub created_at: i64,
}

/// An API token's metadata (the secret itself is shown once, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    /// Id.
    pub id: String,
    /// Tenant (none for platform admins).
    pub tenant_id: Option<String>,
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// The first characters, to recognise it.
    pub prefix: String,
    /// Unix seconds, if it expires.
    pub expires_at: Option<i64>,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a cluster allows, on top of roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterPolicy {
    /// Namespaces users may touch (empty: all).
    #[serde(default)]
    pub allowed_namespaces: Vec<String>,
    /// Refuse every write.
    #[serde(default)]
    pub read_only: bool,
    /// Resources nobody may touch, e.g. `secrets`.
    #[serde(default)]
    pub denied_resources: Vec<String>,
}

/// A registered cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Id (a DNS label, globally unique; the tunnel identity's cluster).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Name, unique in the tenant.
    pub name: String,
    /// Region.
    pub region: String,
    /// Labels.
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// Policy.
    pub policy: ClusterPolicy,
    /// Unix seconds.
    pub created_at: i64,
}

/// Access to a tenant granted to a user of another tenant (the seed's
/// CrossTenantAccess), named by email and tenant slug so granting reveals
/// nothing about whether that user exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossTenantAccess {
    /// Id.
    pub id: String,
    /// The tenant access is granted to.
    pub tenant_id: String,
    /// The grantee's email.
    pub grantee_email: String,
    /// The grantee's tenant (slug).
    pub grantee_tenant: String,
    /// The role the grantee holds in `tenant_id`.
    pub role: Role,
    /// Unix seconds, if it expires.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Counts against the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Tenant.
    pub tenant_id: String,
    /// Users now.
    pub users: i64,
    /// Clusters now.
    pub clusters: i64,
    /// Active (unrevoked, unexpired) tokens now.
    pub active_tokens: i64,
    /// The plan's limits.
    pub limits: UsageLimits,
}
