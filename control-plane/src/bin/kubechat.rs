//! `kubechat`: the administrators' and SREs' CLI for the control plane's
//! REST API. Tables by default, `-o json` for scripts.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kubechat_control_plane::Secret;
use kubechat_control_plane::client::{Client, Reply};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "kubechat", version, about = "KubeChat control-plane CLI")]
struct Cli {
    /// Control plane URL.
    #[arg(long, env = "KUBECHAT_SERVER", default_value = "http://127.0.0.1:8443", global = true)]
    server: String,
    /// CA bundle to trust for an https:// server (PEM).
    #[arg(long, env = "KUBECHAT_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// API token (kc_…).
    #[arg(long, env = "KUBECHAT_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants.
    #[command(subcommand)]
    Tenants(Tenants),
    /// Users of a tenant.
    #[command(subcommand)]
    Users(Users),
    /// API tokens of a tenant.
    #[command(subcommand)]
    Tokens(Tokens),
    /// Clusters of a tenant.
    #[command(subcommand)]
    Clusters(Clusters),
    /// Live agent tunnels: every relay and region (platform admins), or one
    /// tenant's (`--tenant`, tenant admins).
    Tunnels {
        /// Only this tenant (required unless you are a platform admin).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only tunnels held by this relay.
        #[arg(long)]
        relay: Option<String>,
        /// Only tunnels in this region.
        #[arg(long)]
        region: Option<String>,
        /// Refresh every N seconds until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// An interactive chat with a cluster: plain English or kubectl command
    /// lines; plans shown, writes confirmed before they run.
    Chat {
        /// The cluster's id.
        #[arg(long)]
        cluster: String,
        /// The namespace when a command names none.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
}

#[derive(Subcommand)]
enum Tenants {
    /// Onboard a tenant with its first admin (prints the admin's token once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: String,
        #[arg(long)]
        admin_email: String,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
    /// List tenants.
    List,
    /// Show a tenant.
    Get { id: String },
    /// Suspend or reactivate: status active|suspended|trial|churned.
    SetStatus { id: String, status: String },
    /// Change plan: free|team|enterprise.
    SetPlan { id: String, plan: String },
    /// Usage against the plan.
    Usage { id: String },
    /// Offboard: purge everything of the tenant.
    Delete { id: String },
}

#[derive(Subcommand)]
enum Users {
    /// Add a user.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "tenant_user")]
        role: String,
    },
    /// List users.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum Tokens {
    /// Create a token (printed once).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token.
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

#[derive(Subcommand)]
enum Clusters {
    /// Register a cluster.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        region: Option<String>,
    },
    /// List clusters.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Print a kubeconfig for this cluster, with your token.
    Kubeconfig {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    /// Delete a cluster (revokes its credentials).
    Delete {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints `rows` (objects) as a table of `columns` (header, JSON pointer).
fn table(rows: &[Value], columns: &[(&str, &str)]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, p)| cell(r.pointer(p).unwrap_or(&Value::Null))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| cells.iter().map(|c| c[i].len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect::<Vec<_>>().join("   ").trim_end().to_string()
    };
    println!("{}", line(columns.iter().map(|(h, _)| (*h).to_string()).collect()));
    for c in cells {
        println!("{}", line(c));
    }
}

fn show(out: Output, r: &Value, columns: &[(&str, &str)]) {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(r).unwrap_or_default()),
        Output::Table => {
            let rows = r.get("items").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![r.clone()]);
            table(&rows, columns);
        }
    }
}

const TENANT_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("SLUG", "/slug"),
    ("NAME", "/name"),
    ("STATUS", "/status"),
    ("PLAN", "/subscription/plan"),
    ("REGION", "/homeRegion"),
];
const USER_COLS: &[(&str, &str)] = &[("ID", "/id"), ("EMAIL", "/email"), ("ROLE", "/role")];
const TOKEN_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("PREFIX", "/prefix"),
    ("USER", "/userId"),
    ("EXPIRES", "/expiresAt"),
    ("REVOKED", "/revokedAt"),
];
const CLUSTER_COLS: &[(&str, &str)] = &[("ID", "/id"), ("NAME", "/name"), ("REGION", "/region")];
const TUNNEL_COLS: &[(&str, &str)] = &[
    ("TENANT", "/tenantId"),
    ("CLUSTER", "/clusterId"),
    ("RELAY", "/relayId"),
    ("REGION", "/region"),
    ("TRANSPORT", "/transport"),
    ("AGENT", "/agentId"),
    ("VERSION", "/agentVersion"),
    ("REMOTE", "/remoteAddr"),
    ("RTT_US", "/rttUs"),
    ("STREAMS", "/openStreams"),
    ("RECONNECTS", "/reconnects"),
    ("SINCE_MS", "/connectedAtMs"),
];

/// The tunnels that pass the filters.
fn filter_tunnels(v: &Value, cluster: Option<&str>, relay: Option<&str>, region: Option<&str>) -> Value {
    let keep = |t: &Value, key: &str, want: Option<&str>| want.is_none_or(|w| t[key] == w);
    let items: Vec<Value> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| keep(t, "clusterId", cluster) && keep(t, "relayId", relay) && keep(t, "region", region))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    json!({"items": items})
}

async fn run(cli: Cli) -> Result<(), String> {
    let c = match &cli.ca_file {
        Some(f) => {
            let pem = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            Client::new_tls(&cli.server, cli.token.map(Secret), &pem)
        }
        None => Client::new(&cli.server, cli.token.map(Secret)),
    };
    let out = cli.output;
    let ok = |r: Reply| -> Result<Value, String> {
        if (200..300).contains(&r.status) {
            Ok(r.body)
        } else {
            let msg = r
                .body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| r.body.to_string());
            let code = r.body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
            Err(format!("{code} (HTTP {}): {msg}", r.status))
        }
    };
    if let Command::Chat { cluster, namespace } = &cli.command {
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        return kubechat_control_plane::chat_cli::session(&c, cluster, namespace, input, std::io::stdout())
            .await
            .map_err(|e| format!("chat: {e}"));
    }
    if let Command::Tunnels { tenant, cluster, relay, region, watch } = &cli.command {
        let path = match tenant {
            Some(t) => format!("/v1/tenants/{t}/tunnels"),
            None => "/v1/tunnels".to_string(),
        };
        loop {
            let v = filter_tunnels(&ok(c.get(&path).await?)?, cluster.as_deref(), relay.as_deref(), region.as_deref());
            show(out, &v, TUNNEL_COLS);
            match watch {
                Some(secs) => {
                    tokio::time::sleep(std::time::Duration::from_secs((*secs).max(1))).await;
                    println!();
                }
                None => return Ok(()),
            }
        }
    }
    match cli.command {
        Command::Tenants(t) => match t {
            Tenants::Create { name, slug, admin_email, plan, region } => {
                let mut body = json!({"name": name, "slug": slug, "adminEmail": admin_email});
                if let Some(p) = plan {
                    body["plan"] = json!(p);
                }
                if let Some(r) = region {
                    body["homeRegion"] = json!(r);
                }
                let r = ok(c.post("/v1/tenants", &body).await?)?;
                match out {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
                    Output::Table => {
                        table(&[r["tenant"].clone()], TENANT_COLS);
                        println!("\nadmin token (shown once): {}", cell(&r["token"]));
                    }
                }
            }
            Tenants::List => show(out, &ok(c.get("/v1/tenants").await?)?, TENANT_COLS),
            Tenants::Get { id } => show(out, &ok(c.get(&format!("/v1/tenants/{id}")).await?)?, TENANT_COLS),
            Tenants::SetStatus { id, status } => {
                show(out, &ok(c.put(&format!("/v1/tenants/{id}"), &json!({"status": status})).await?)?, TENANT_COLS)
            }
            Tenants::SetPlan { id, plan } => {
                show(out, &ok(c.put(&format!("/v1/tenants/{id}"), &json!({"plan": plan})).await?)?, TENANT_COLS)
            }
            Tenants::Usage { id } => show(
                out,
                &ok(c.get(&format!("/v1/tenants/{id}/usage")).await?)?,
                &[
                    ("USERS", "/users"),
                    ("MAX USERS", "/limits/maxUsers"),
                    ("CLUSTERS", "/clusters"),
                    ("MAX CLUSTERS", "/limits/maxClusters"),
                    ("TOKENS", "/activeTokens"),
                ],
            ),
            Tenants::Delete { id } => {
                show(out, &ok(c.delete(&format!("/v1/tenants/{id}")).await?)?, &[("DELETED", "/deleted")])
            }
        },
        Command::Users(u) => match u {
            Users::Add { tenant, email, role } => show(
                out,
                &ok(c.post(&format!("/v1/tenants/{tenant}/users"), &json!({"email": email, "role": role})).await?)?,
                USER_COLS,
            ),
            Users::List { tenant } => show(out, &ok(c.get(&format!("/v1/tenants/{tenant}/users")).await?)?, USER_COLS),
        },
        Command::Tokens(t) => match t {
            Tokens::Create { tenant, name, user, expires_in_days } => {
                let mut body = json!({"name": name});
                if let Some(u) = user {
                    body["userId"] = json!(u);
                }
                if let Some(d) = expires_in_days {
                    body["expiresInDays"] = json!(d);
                }
                let r = ok(c.post(&format!("/v1/tenants/{tenant}/tokens"), &body).await?)?;
                match out {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
                    Output::Table => {
                        table(&[r["apiToken"].clone()], TOKEN_COLS);
                        println!("\ntoken (shown once): {}", cell(&r["token"]));
                    }
                }
            }
            Tokens::List { tenant } => {
                show(out, &ok(c.get(&format!("/v1/tenants/{tenant}/tokens")).await?)?, TOKEN_COLS)
            }
            Tokens::Revoke { tenant, id } => show(
                out,
                &ok(c.delete(&format!("/v1/tenants/{tenant}/tokens/{id}")).await?)?,
                &[("REVOKED", "/revoked")],
            ),
        },
        Command::Tunnels { .. } | Command::Chat { .. } => {}
        Command::Clusters(cl) => match cl {
            Clusters::Add { tenant, name, region } => {
                let mut body = json!({"name": name});
                if let Some(r) = region {
                    body["region"] = json!(r);
                }
                show(out, &ok(c.post(&format!("/v1/tenants/{tenant}/clusters"), &body).await?)?, CLUSTER_COLS)
            }
            Clusters::List { tenant } => {
                show(out, &ok(c.get(&format!("/v1/tenants/{tenant}/clusters")).await?)?, CLUSTER_COLS)
            }
            Clusters::Kubeconfig { tenant, id } => {
                let r = ok(c.get(&format!("/v1/tenants/{tenant}/clusters/{id}/kubeconfig")).await?)?;
                print!("{}", r["kubeconfig"].as_str().unwrap_or_default());
            }
            Clusters::Delete { tenant, id } => show(
                out,
                &ok(c.delete(&format!("/v1/tenants/{tenant}/clusters/{id}")).await?)?,
                &[("DELETED", "/deleted")],
            ),
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
