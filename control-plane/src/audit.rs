//! The tamper-evident audit log and the usage ledger.
//!
//! Each tenant's audit events form a hash chain: event `n` stores the hash
//! of event `n-1` and its own hash, SHA-256 over that previous hash and a
//! canonical encoding of every stored field (a JSON array in a fixed order).
//! `audit_heads` holds each tenant's last position and hash. Editing,
//! deleting or reordering a stored row breaks the chain at that position,
//! and [`verify`] names it. Appends take the head row first (a write, so
//! SQLite serializes them; `FOR UPDATE` on PostgreSQL, so several control
//! planes can append to one tenant's chain).
//!
//! Usage events are stored once per id (the relay may resend) and summed
//! per tenant and month.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use kubechat_protocol::grant::GrantSigner;

use crate::store::StoreError;
use crate::store::{Backend, Db, Scope};

/// One audit event, as stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditEntry {
    /// Position in the tenant's chain (1, 2, …); set when stored.
    pub seq: i64,
    /// Globally unique, time-ordered id.
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// Tenant id.
    pub tenant_id: String,
    /// Cluster id ("" for events not about one).
    pub cluster_id: String,
    /// The relay that observed it ("" for the control plane's own).
    pub relay_id: String,
    /// The kube request it belongs to.
    pub request_id: String,
    /// `decision` (the control plane's allow or deny, recorded before a
    /// request is forwarded or as it is refused), `request` (the relay's
    /// record of how a forwarded request went), `tunnel_connect` or
    /// `tunnel_disconnect`.
    pub kind: String,
    /// Who (e.g. `kubechat:user:alice@example.com`).
    pub user: String,
    /// Their groups.
    pub groups: Vec<String>,
    /// Kubernetes verb.
    pub verb: String,
    /// API group.
    pub api_group: String,
    /// Resource.
    pub resource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Subresource.
    pub subresource: String,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP status answered.
    pub status: i64,
    /// Request bytes.
    pub bytes_in: i64,
    /// Response bytes.
    pub bytes_out: i64,
    /// Duration.
    pub duration_ms: i64,
    /// `allow` or `deny`.
    pub decision: String,
    /// Why (for denials and disconnects).
    pub reason: String,
    /// The caller's address.
    pub client_address: String,
    /// kubectl's `Kubectl-Command`.
    pub kubectl_command: String,
    /// kubectl's `Kubectl-Session`.
    pub kubectl_session: String,
    /// Fields cut short to fit, or holding NUL characters now U+FFFD
    /// (camelCase name → original length in bytes, or for `groups` the
    /// original number of groups). Part of the hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub truncated: BTreeMap<String, u64>,
    /// Hash of the previous event ("" for the first).
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// `rows` parenthesised lists of `cols` numbered placeholders, for a
/// multi-row `VALUES` or an `IN`: `value_lists(2, 2)` is
/// `($1, $2), ($3, $4)`.
fn value_lists(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`value_lists`] with `?` placeholders (SQLite binds them in order).
fn positional_lists(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row.as_str(); rows].join(", ")
}

/// How many columns [`COLUMNS`] names.
const AUDIT_COLUMNS: usize = 30;
/// Events per insert. A chunk travels as one JSON parameter (SQLite finds
/// each numbered parameter by a linear scan, so binding 30 a row made a
/// large insert quadratic); the bound only keeps one statement's text small.
const APPEND_CHUNK: usize = 256;
/// The positions in [`COLUMNS`] that hold integers (seq, time_ms, status,
/// bytes_in, bytes_out, duration_ms); the rest are text.
const INTEGER_COLUMNS: [usize; 6] = [1, 3, 18, 19, 20, 21];

/// The rows of a JSON array parameter `$1` (each row an array), as a
/// `FROM` item whose column `value` is the row.
fn json_rows(backend: Backend) -> &'static str {
    match backend {
        // jsonb: parsed once by the cast, not again by each `->>`.
        Backend::Postgres => "jsonb_array_elements($1::jsonb) AS j(value)",
        Backend::Sqlite => "json_each($1) AS j",
    }
}

/// The strings of a JSON array parameter `$1`, as a `FROM` item whose
/// column `value` is each string.
fn json_texts(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "jsonb_array_elements_text($1::jsonb) AS j(value)",
        Backend::Sqlite => "json_each($1) AS j",
    }
}

/// Rows per multi-row insert on SQLite, largest first: a batch is cut into
/// these sizes, so few distinct statements are prepared (and cached).
const POSITIONAL_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The sizes [`insert_positional`] cuts `n` rows into, largest first.
fn positional_chunks(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let size = POSITIONAL_CHUNKS.iter().copied().find(|&c| c <= n).unwrap_or(1);
        out.push(size);
        n -= size;
    }
    out
}

/// Inserts `rows` with one multi-row `VALUES` of `?` placeholders per
/// chunk, each row's values bound in the order of [`COLUMNS`] (SQLite).
async fn insert_positional(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    rows: &[AuditEntry],
) -> Result<(), StoreError> {
    let mut rest = rows;
    for size in positional_chunks(rows.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = format!("INSERT INTO audit_events ({COLUMNS}) VALUES {}", positional_lists(size, AUDIT_COLUMNS));
        let mut q = sqlx::query(&sql);
        for e in chunk {
            for cell in cells(e) {
                q = match cell {
                    Cell::Text(t) => q.bind(t),
                    Cell::Owned(t) => q.bind(t),
                    Cell::Int(i) => q.bind(i),
                };
            }
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The select list taking [`COLUMNS`] out of one row of [`json_rows`], in
/// order, integers cast back to integers.
fn row_columns() -> String {
    (0..AUDIT_COLUMNS)
        .map(|i| {
            if INTEGER_COLUMNS.contains(&i) {
                format!("CAST(j.value ->> {i} AS BIGINT)")
            } else {
                format!("j.value ->> {i}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` as the JSON array of arrays [`row_columns`] reads, each in the
/// order of [`COLUMNS`].
fn rows_json(rows: &[AuditEntry]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|e| {
            cells(e)
                .into_iter()
                .map(|cell| match cell {
                    Cell::Text(t) => json!(t),
                    Cell::Owned(t) => json!(t),
                    Cell::Int(i) => json!(i),
                })
                .collect()
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// One stored value of an audit event.
enum Cell<'a> {
    Text(&'a str),
    Owned(String),
    Int(i64),
}

/// The values of `e` in the order of [`COLUMNS`]: the one place that order
/// is spelled out for both ways of inserting (integers where
/// [`INTEGER_COLUMNS`] says).
fn cells(e: &AuditEntry) -> [Cell<'_>; AUDIT_COLUMNS] {
    use Cell::{Int, Owned, Text};
    [
        Text(&e.tenant_id),
        Int(e.seq),
        Text(&e.id),
        Int(e.time_ms),
        Text(&e.cluster_id),
        Text(&e.relay_id),
        Text(&e.request_id),
        Text(&e.kind),
        Text(&e.user),
        Owned(serde_json::to_string(&e.groups).unwrap_or_else(|_| "[]".into())),
        Text(&e.verb),
        Text(&e.api_group),
        Text(&e.resource),
        Text(&e.namespace),
        Text(&e.name),
        Text(&e.subresource),
        Text(&e.method),
        Text(&e.path),
        Int(e.status),
        Int(e.bytes_in),
        Int(e.bytes_out),
        Int(e.duration_ms),
        Text(&e.decision),
        Text(&e.reason),
        Text(&e.client_address),
        Text(&e.kubectl_command),
        Text(&e.kubectl_session),
        Owned(if e.truncated.is_empty() { String::new() } else { json!(e.truncated).to_string() }),
        Text(&e.prev_hash),
        Text(&e.hash),
    ]
}

const COLUMNS: &str = "tenant_id, seq, id, time_ms, cluster_id, relay_id, request_id, kind, user_name, groups_json, verb, api_group, resource, namespace, name, subresource, method, path, status, bytes_in, bytes_out, duration_ms, decision, reason, client_address, kubectl_command, kubectl_session, truncated_json, prev_hash, hash";

/// Longest path kept in an audit event, in bytes.
pub const MAX_PATH: usize = 8192;
/// Longest other text field kept in an audit event, in bytes.
pub const MAX_FIELD: usize = 4096;
/// Most groups kept in an audit event.
pub const MAX_GROUPS: usize = 64;

/// Makes `field` storable within `limit` bytes: NUL characters (which
/// PostgreSQL's text and jsonb cannot hold, so one would fail its whole
/// batch) become U+FFFD, then it is cut at a character boundary. Its
/// original length in bytes if it changed.
fn cut(field: &mut String, limit: usize) -> Option<u64> {
    let original = field.len() as u64;
    let had_nul = field.contains('\0');
    if had_nul {
        *field = field.replace('\0', "\u{fffd}");
    }
    if field.len() <= limit {
        return had_nul.then_some(original);
    }
    let mut end = limit;
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    field.truncate(end);
    Some(original)
}

/// Cuts every over-long field of `e` to its limit and marks it in
/// `truncated`: an event is never refused for its size, so no caller can
/// keep their request out of the log by making it large. A NUL character
/// becomes U+FFFD, the field marked the same way (its original length):
/// stored as it came, it would fail its batch on PostgreSQL again and again.
pub fn bound(e: &mut AuditEntry) {
    let mut marks = Vec::new();
    if let Some(n) = cut(&mut e.path, MAX_PATH) {
        marks.push(("path", n));
    }
    for (name, field) in [
        ("id", &mut e.id),
        ("clusterId", &mut e.cluster_id),
        ("relayId", &mut e.relay_id),
        ("requestId", &mut e.request_id),
        ("kind", &mut e.kind),
        ("user", &mut e.user),
        ("verb", &mut e.verb),
        ("apiGroup", &mut e.api_group),
        ("resource", &mut e.resource),
        ("namespace", &mut e.namespace),
        ("name", &mut e.name),
        ("subresource", &mut e.subresource),
        ("method", &mut e.method),
        ("decision", &mut e.decision),
        ("reason", &mut e.reason),
        ("clientAddress", &mut e.client_address),
        ("kubectlCommand", &mut e.kubectl_command),
        ("kubectlSession", &mut e.kubectl_session),
    ] {
        if let Some(n) = cut(field, MAX_FIELD) {
            marks.push((name, n));
        }
    }
    let mut groups_cut = false;
    for g in &mut e.groups {
        groups_cut |= cut(g, MAX_FIELD).is_some();
    }
    if e.groups.len() > MAX_GROUPS || groups_cut {
        marks.push(("groups", e.groups.len() as u64));
        e.groups.truncate(MAX_GROUPS);
    }
    for (name, n) in marks {
        e.truncated.insert(name.to_string(), n);
    }
}

/// The hash of `e` following `prev`.
pub fn chain_hash(prev: &str, e: &AuditEntry) -> String {
    let canonical = json!([
        e.seq,
        e.id,
        e.time_ms,
        e.tenant_id,
        e.cluster_id,
        e.relay_id,
        e.request_id,
        e.kind,
        e.user,
        e.groups,
        e.verb,
        e.api_group,
        e.resource,
        e.namespace,
        e.name,
        e.subresource,
        e.method,
        e.path,
        e.status,
        e.bytes_in,
        e.bytes_out,
        e.duration_ms,
        e.decision,
        e.reason,
        e.client_address,
        e.kubectl_command,
        e.kubectl_session
    ]);
    // Events written before truncation marks existed hash as they did.
    let canonical = match canonical {
        serde_json::Value::Array(mut fields) if !e.truncated.is_empty() => {
            fields.push(json!(e.truncated));
            serde_json::Value::Array(fields).to_string()
        }
        other => other.to_string(),
    };
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"|");
    h.update(canonical.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        time_ms: r.try_get("time_ms")?,
        tenant_id: r.try_get("tenant_id")?,
        cluster_id: r.try_get("cluster_id")?,
        relay_id: r.try_get("relay_id")?,
        request_id: r.try_get("request_id")?,
        kind: r.try_get("kind")?,
        user: r.try_get("user_name")?,
        groups: serde_json::from_str(&r.try_get::<String, _>("groups_json")?).unwrap_or_default(),
        verb: r.try_get("verb")?,
        api_group: r.try_get("api_group")?,
        resource: r.try_get("resource")?,
        namespace: r.try_get("namespace")?,
        name: r.try_get("name")?,
        subresource: r.try_get("subresource")?,
        method: r.try_get("method")?,
        path: r.try_get("path")?,
        status: r.try_get("status")?,
        bytes_in: r.try_get("bytes_in")?,
        bytes_out: r.try_get("bytes_out")?,
        duration_ms: r.try_get("duration_ms")?,
        decision: r.try_get("decision")?,
        reason: r.try_get("reason")?,
        client_address: r.try_get("client_address")?,
        kubectl_command: r.try_get("kubectl_command")?,
        kubectl_session: r.try_get("kubectl_session")?,
        truncated: serde_json::from_str(&r.try_get::<String, _>("truncated_json")?).unwrap_or_default(),
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Appends `entries` (all of `tenant`) to its chain in order, skipping ids
/// already stored anywhere, in a transaction of its own. Returns how many
/// were new. (The request path goes through [`crate::writer`] instead.)
pub async fn append(db: &Db, tenant: &str, entries: Vec<AuditEntry>) -> Result<usize, StoreError> {
    let mut tx = db.begin(&Scope::Platform).await?;
    let added = append_in(&mut tx, db.backend(), tenant, entries).await?;
    tx.commit().await?;
    Ok(added)
}

/// Appends `entries` of `tenant` within `tx` (a platform-scoped write
/// transaction): the group commit of many appends in one transaction. On
/// PostgreSQL it turns sequential scans off for the rest of `tx`.
pub async fn append_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    tenant: &str,
    entries: Vec<AuditEntry>,
) -> Result<usize, StoreError> {
    // The head, created if need be, in one statement that writes it: on
    // PostgreSQL the upsert locks the row until commit (as `FOR UPDATE`
    // would), on SQLite the write takes the database's write lock for the
    // whole transaction, so two appenders never read the same head.
    let head = sqlx::query(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, '') \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq RETURNING seq, hash",
    )
    .bind(tenant.to_string())
    .fetch_one(&mut **tx)
    .await?;
    let (mut seq, mut prev): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
    if backend == Backend::Postgres {
        // The dedupe below is a prepared statement: parsed and planned once
        // a connection, not once a batch (unprepared, its planning cost
        // more than it ran). PostgreSQL soon runs it with a generic plan,
        // made once and kept; made while the table was small, that plan
        // would be a sequential scan of every stored event, kept as the
        // table grows. With sequential scans off for this transaction, it
        // takes the id index whatever the table's size. (Nothing else a
        // writer's transaction runs wants a sequential scan: each of its
        // statements finds rows by key.)
        sqlx::query("SELECT set_config('enable_seqscan', 'off', true)").execute(&mut **tx).await?;
    }
    let mut added = 0;
    // Ids seen in this batch: a repeat within it is skipped like a stored one.
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Two statements a chunk (which ids are stored; the new rows), not two
    // an event: each statement is a round trip to the database.
    for chunk in entries.chunks(APPEND_CHUNK) {
        // The chunk's ids as one JSON array: one parameter, not one each.
        let ids: Vec<&str> = chunk.iter().map(|e| e.id.as_str()).collect();
        let sql = match backend {
            // One index condition, `= ANY` of the ids: no plan but a lookup
            // of each id in the index (the `IN (SELECT …)` form is a join,
            // and a generic plan may make it a merge join reading the whole
            // index: 14.5 ms a batch in one run).
            Backend::Postgres => {
                "SELECT id FROM audit_events WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))"
                    .to_string()
            }
            Backend::Sqlite => {
                format!("SELECT id FROM audit_events WHERE id IN (SELECT j.value FROM {})", json_texts(backend))
            }
        };
        for row in sqlx::query(&sql).bind(json!(ids).to_string()).fetch_all(&mut **tx).await? {
            seen.insert(row.try_get("id")?);
        }
        let mut rows = Vec::with_capacity(chunk.len());
        for e in chunk {
            if !seen.insert(e.id.clone()) {
                continue;
            }
            let mut e = e.clone();
            bound(&mut e);
            seq += 1;
            e.seq = seq;
            e.tenant_id = tenant.to_string();
            e.prev_hash = std::mem::take(&mut prev);
            e.hash = chain_hash(&e.prev_hash, &e);
            prev = e.hash.clone();
            rows.push(e);
        }
        if rows.is_empty() {
            continue;
        }
        match backend {
            Backend::Postgres => {
                let sql = format!(
                    "INSERT INTO audit_events ({COLUMNS}) SELECT {} FROM {}",
                    row_columns(),
                    json_rows(backend)
                );
                sqlx::query(&sql).bind(rows_json(&rows)).execute(&mut **tx).await?;
            }
            // SQLite's JSON functions render and re-parse a row for every
            // column taken out of it (a third of its time in the writer),
            // so its rows go as anonymous positional parameters: `?` needs
            // no lookup by name per parameter, unlike `$n`.
            Backend::Sqlite => insert_positional(tx, &rows).await?,
        }
        added += rows.len();
    }
    if added > 0 {
        sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE tenant_id = $3")
            .bind(seq)
            .bind(prev)
            .bind(tenant.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(added)
}

/// Filters of the audit listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only this user (exact, e.g. `kubechat:user:a@b.c`).
    pub user: Option<String>,
    /// Only this verb.
    pub verb: Option<String>,
    /// Only this resource.
    pub resource: Option<String>,
    /// Only this kind (`decision`, `request`, …).
    pub kind: Option<String>,
    /// Only the events of this request.
    pub request_id: Option<String>,
    /// From this time (Unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Until this time (Unix ms, exclusive).
    pub until_ms: Option<i64>,
    /// Only this decision (`allow`, `deny`).
    pub decision: Option<String>,
    /// After this position (the previous page's `next`).
    pub after: i64,
    /// Newest first: only positions below this one (`i64::MAX` for the
    /// newest page; the previous page's `next` after that). Overrides
    /// `after`.
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// One page of a tenant's audit events, oldest first, and the cursor of the
/// next page if there is one.
pub async fn list(db: &Db, tenant: &str, f: &Filter) -> Result<(Vec<AuditEntry>, Option<i64>), StoreError> {
    let mut tx = db.begin(&Scope::Tenant(tenant.to_string())).await?;
    let (cmp, order, from) = match f.before {
        Some(before) => ("<", "DESC", before),
        None => (">", "ASC", f.after),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq {cmp} $2 \
         AND ($3 = '' OR cluster_id = $3) AND ($4 = '' OR user_name = $4) AND ($5 = '' OR verb = $5) AND ($6 = '' OR resource = $6) \
         AND time_ms >= $7 AND time_ms < $8 AND ($10 = '' OR kind = $10) AND ($11 = '' OR request_id = $11) \
         AND ($12 = '' OR decision = $12) ORDER BY seq {order} LIMIT $9"
    ))
    .bind(tenant.to_string())
    .bind(from)
    .bind(f.cluster.clone().unwrap_or_default())
    .bind(f.user.clone().unwrap_or_default())
    .bind(f.verb.clone().unwrap_or_default())
    .bind(f.resource.clone().unwrap_or_default())
    .bind(f.since_ms.unwrap_or(i64::MIN))
    .bind(f.until_ms.unwrap_or(i64::MAX))
    .bind(f.limit + 1)
    .bind(f.kind.clone().unwrap_or_default())
    .bind(f.request_id.clone().unwrap_or_default())
    .bind(f.decision.clone().unwrap_or_default())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() as i64 > f.limit {
        items.truncate(f.limit as usize);
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok((items, next))
}

/// One kube request as the audit log has it: the control plane's decision
/// and what each relay recorded of how it went, joined by request id.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// The request id.
    pub request_id: String,
    /// The control plane's last decision record (allow or deny), if any: an
    /// allowed request that could not be sent after all has a deny after
    /// its allow.
    pub decision: Option<AuditEntry>,
    /// The relays' outcome records (status, bytes, duration).
    pub outcomes: Vec<AuditEntry>,
    /// True when a request the control plane allowed has an outcome; false
    /// means it was allowed but never reported back (the relay died while it
    /// ran, or its report is still on the way).
    pub complete: bool,
}

/// The audit records of request `request_id` in `tenant`'s log.
pub async fn request(db: &Db, tenant: &str, request_id: &str) -> Result<Option<Joined>, StoreError> {
    let f = Filter { request_id: Some(request_id.to_string()), limit: 1000, ..Default::default() };
    let (items, _) = list(db, tenant, &f).await?;
    if items.is_empty() {
        return Ok(None);
    }
    let (decisions, outcomes): (Vec<_>, Vec<_>) = items.into_iter().partition(|e| e.kind == crate::kube::DECISION);
    let decision = decisions.into_iter().last();
    let complete = match &decision {
        Some(d) if d.decision == "allow" => !outcomes.is_empty(),
        _ => true,
    };
    Ok(Some(Joined { request_id: request_id.to_string(), decision, outcomes, complete }))
}

/// The first place a tenant's chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Break {
    /// The position where the chain stops being what was written.
    pub position: i64,
    /// The id of the event stored there, if any.
    pub id: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// The result of verifying a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// True when every event and the head check out.
    pub intact: bool,
    /// Events checked.
    pub events: i64,
    /// The last position and hash, per the head.
    pub head_seq: i64,
    /// The head hash.
    pub head_hash: String,
    /// The first break, if any.
    pub first_break: Option<Break>,
}

fn checkpoint_message(tenant: &str, seq: i64, hash: &str) -> Vec<u8> {
    format!("kubechat-audit-checkpoint\n{tenant}\n{seq}\n{hash}").into_bytes()
}

/// Prunes a tenant's events older than `cutoff_ms` from the front of its
/// chain (up to the first younger one), leaving a checkpoint signed with the
/// control plane's key: the position and hash the rest chains from. Returns
/// the position pruned through, if anything was.
pub async fn prune(db: &Db, tenant: &str, cutoff_ms: i64, signer: &GrantSigner) -> Result<Option<i64>, StoreError> {
    use base64::Engine;
    let mut tx = db.begin(&Scope::Platform).await?;
    let bounds = sqlx::query(
        "SELECT MIN(CASE WHEN time_ms >= $2 THEN seq END) AS young, MAX(seq) AS last, MIN(seq) AS first FROM audit_events WHERE tenant_id = $1",
    )
    .bind(tenant.to_string())
    .bind(cutoff_ms)
    .fetch_one(&mut *tx)
    .await?;
    let (young, last, first): (Option<i64>, Option<i64>, Option<i64>) =
        (bounds.try_get("young")?, bounds.try_get("last")?, bounds.try_get("first")?);
    let Some(through) = young.map(|y| y - 1).or(last) else { return Ok(None) };
    if first.is_none_or(|f| through < f) {
        return Ok(None);
    }
    let hash: String = sqlx::query("SELECT hash FROM audit_events WHERE tenant_id = $1 AND seq = $2")
        .bind(tenant.to_string())
        .bind(through)
        .fetch_one(&mut *tx)
        .await?
        .try_get("hash")?;
    let signature = signer.sign_bytes(&checkpoint_message(tenant, through, &hash));
    sqlx::query("INSERT INTO audit_checkpoints (tenant_id, seq, hash, created_at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, seq) DO NOTHING")
        .bind(tenant.to_string())
        .bind(through)
        .bind(hash)
        .bind(crate::store::now())
        .bind(signer.key_id().to_string())
        .bind(base64::engine::general_purpose::STANDARD.encode(signature))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq <= $2")
        .bind(tenant.to_string())
        .bind(through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(through))
}

/// Applies every tenant's plan retention (`maxAuditRetentionDays`) once.
pub async fn apply_retention(app: &crate::App) -> Result<(), StoreError> {
    for t in app.db.tenants(&Scope::Platform).await? {
        let days = t.subscription.limits.max_audit_retention_days.max(1);
        let cutoff = crate::directory::now_ms() - days * 86_400_000;
        if let Some(through) = prune(&app.db, &t.id, cutoff, &app.signer).await? {
            tracing::info!(tenant = %t.id, through, days, "audit events past retention pruned; checkpoint signed");
        }
    }
    Ok(())
}

/// Recomputes a tenant's whole chain (from its latest signed checkpoint, if
/// retention pruned the start) and compares it with the head.
pub async fn verify(db: &Db, tenant: &str, signer: &GrantSigner) -> Result<Verification, StoreError> {
    use base64::Engine;
    let mut tx = db.begin(&Scope::Tenant(tenant.to_string())).await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    let (head_seq, head_hash): (i64, String) = match head {
        Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
        None => (0, String::new()),
    };
    let mut expected = 1i64;
    let mut prev = String::new();
    let mut checked = 0i64;
    let mut first_break = None;
    let checkpoint = sqlx::query(
        "SELECT seq, hash, key_id, signature FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(tenant.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(c) = checkpoint {
        let (seq, hash, key_id, sig): (i64, String, String, String) =
            (c.try_get("seq")?, c.try_get("hash")?, c.try_get("key_id")?, c.try_get("signature")?);
        let sig = base64::engine::general_purpose::STANDARD.decode(sig).unwrap_or_default();
        if key_id != signer.key_id() || !signer.verify_bytes(&checkpoint_message(tenant, seq, &hash), &sig) {
            first_break = Some(Break {
                position: seq,
                id: None,
                problem: format!(
                    "the checkpoint at event {seq} is not signed by this control plane's key {}",
                    signer.key_id()
                ),
            });
        }
        expected = seq + 1;
        prev = hash;
    }
    while first_break.is_none() {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT 1000"
        ))
        .bind(tenant.to_string())
        .bind(expected)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let e = from_row(r)?;
            checked += 1;
            let problem = if e.seq != expected {
                Some((expected, None, format!("event {expected} is missing (the next stored is {})", e.seq)))
            } else if e.prev_hash != prev {
                Some((
                    e.seq,
                    Some(e.id.clone()),
                    "the link to the previous event is broken (reordered or a predecessor removed)".to_string(),
                ))
            } else if chain_hash(&prev, &e) != e.hash {
                Some((e.seq, Some(e.id.clone()), "the event's content does not match its hash (edited)".to_string()))
            } else {
                None
            };
            if let Some((position, id, problem)) = problem {
                first_break = Some(Break { position, id, problem });
                break;
            }
            prev = e.hash.clone();
            expected = e.seq + 1;
        }
        if first_break.is_some() {
            break;
        }
    }
    tx.commit().await?;
    if first_break.is_none() && (expected - 1 != head_seq || prev != head_hash) {
        first_break = Some(Break {
            position: expected,
            id: None,
            problem: format!(
                "the log ends at event {} but {} were written (events removed from the end)",
                expected - 1,
                head_seq
            ),
        });
    }
    Ok(Verification { intact: first_break.is_none(), events: checked, head_seq, head_hash, first_break })
}

/// Usage event types, as stored.
pub const USAGE_TYPES: &[&str] =
    &["command_executed", "api_request", "cluster_connected", "user_session", "audit_export"];

/// Records a usage event once per id, in a transaction of its own; `false`
/// if it was already stored.
pub async fn add_usage(
    db: &Db,
    id: &str,
    tenant: &str,
    cluster: &str,
    usage_type: &str,
    quantity: f64,
    time_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = db.begin(&Scope::Platform).await?;
    let added = add_usage_in(&mut tx, db.backend(), id, tenant, cluster, usage_type, quantity, time_ms).await?;
    tx.commit().await?;
    Ok(added)
}

/// Records a usage event within `tx`.
#[allow(clippy::too_many_arguments)]
pub async fn add_usage_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    id: &str,
    tenant: &str,
    cluster: &str,
    usage_type: &str,
    quantity: f64,
    time_ms: i64,
) -> Result<bool, StoreError> {
    let one = UsageRow { id, tenant, cluster, usage_type, quantity, time_ms };
    Ok(add_usage_rows_in(tx, backend, &[one]).await? > 0)
}

/// One usage event to store (see [`add_usage_rows_in`]).
#[derive(Debug, Clone, Copy)]
pub struct UsageRow<'a> {
    /// Its id (a repeat is not stored twice).
    pub id: &'a str,
    /// The tenant it is billed to.
    pub tenant: &'a str,
    /// The cluster it happened on.
    pub cluster: &'a str,
    /// What was used.
    pub usage_type: &'a str,
    /// How much.
    pub quantity: f64,
    /// When, in Unix milliseconds.
    pub time_ms: i64,
}

/// Usage rows per multi-row insert (7 parameters each).
const USAGE_CHUNK: usize = 128;

/// Stores `rows` within `tx`, skipping ids already stored, in one
/// statement per [`USAGE_CHUNK`] rows. Returns how many were new.
pub async fn add_usage_rows_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    rows: &[UsageRow<'_>],
) -> Result<u64, StoreError> {
    let mut added = 0;
    for chunk in rows.chunks(USAGE_CHUNK) {
        // The same parameters in the same order either way; SQLite takes
        // `?` without looking each `$n` up by name.
        let values = match backend {
            Backend::Postgres => value_lists(chunk.len(), 7),
            Backend::Sqlite => positional_lists(chunk.len(), 7),
        };
        let sql = format!(
            "INSERT INTO usage_events (id, tenant_id, cluster_id, usage_type, quantity, time_ms, month) VALUES {values} ON CONFLICT (id) DO NOTHING"
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            let month = time::OffsetDateTime::from_unix_timestamp(u.time_ms / 1000)
                .map(|t| format!("{:04}-{:02}", t.year(), u8::from(t.month())))
                .unwrap_or_else(|_| "1970-01".into());
            q = q
                .bind(u.id.to_string())
                .bind(u.tenant.to_string())
                .bind(u.cluster.to_string())
                .bind(u.usage_type.to_string())
                .bind(u.quantity)
                .bind(u.time_ms)
                .bind(month);
        }
        added += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(added)
}

/// A tenant's usage in `month` (`YYYY-MM`), per type.
pub async fn usage_totals(db: &Db, tenant: &str, month: &str) -> Result<Vec<(String, f64)>, StoreError> {
    let mut tx = db.begin(&Scope::Tenant(tenant.to_string())).await?;
    let rows = sqlx::query("SELECT usage_type, SUM(quantity) AS q FROM usage_events WHERE tenant_id = $1 AND month = $2 GROUP BY usage_type ORDER BY usage_type")
        .bind(tenant.to_string())
        .bind(month.to_string())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Ok((r.try_get::<String, _>("usage_type")?, r.try_get::<f64, _>("q")?)))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The current month, `YYYY-MM` (UTC).
pub fn this_month() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_count_matches_the_column_list() {
        assert_eq!(COLUMNS.split(',').count(), AUDIT_COLUMNS);
    }

    #[test]
    fn an_events_values_are_integers_exactly_where_the_columns_are() {
        let e = AuditEntry { seq: 7, status: 200, ..AuditEntry::default() };
        let ints: Vec<usize> =
            cells(&e).iter().enumerate().filter(|(_, c)| matches!(c, Cell::Int(_))).map(|(i, _)| i).collect();
        assert_eq!(ints, INTEGER_COLUMNS);
        let names: Vec<&str> = COLUMNS.split(", ").collect();
        assert_eq!(
            INTEGER_COLUMNS.map(|i| names[i]),
            ["seq", "time_ms", "status", "bytes_in", "bytes_out", "duration_ms"]
        );
        assert!(matches!(cells(&e)[1], Cell::Int(7)) && matches!(cells(&e)[18], Cell::Int(200)));
    }

    #[test]
    fn positional_inserts_take_few_statement_shapes_and_every_row() {
        assert_eq!(positional_chunks(0), Vec::<usize>::new());
        assert_eq!(positional_chunks(1), [1]);
        assert_eq!(positional_chunks(23), [16, 4, 1, 1, 1]);
        assert_eq!(positional_chunks(150), [64, 64, 16, 4, 1, 1]);
        for n in 0..300 {
            assert_eq!(positional_chunks(n).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn value_lists_number_every_placeholder_once() {
        assert_eq!(value_lists(1, 3), "($1, $2, $3)");
        assert_eq!(value_lists(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(positional_lists(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn the_hash_covers_every_field_and_the_link() {
        let e = AuditEntry { seq: 1, id: "a".into(), user: "u".into(), ..Default::default() };
        let h = chain_hash("", &e);
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash("x", &e), "the link");
        for tweak in [
            |e: &mut AuditEntry| e.user = "v".into(),
            |e: &mut AuditEntry| e.seq = 2,
            |e: &mut AuditEntry| e.status = 403,
            |e: &mut AuditEntry| e.groups = vec!["g".into()],
            |e: &mut AuditEntry| e.kubectl_session = "s".into(),
        ] {
            let mut f = e.clone();
            tweak(&mut f);
            assert_ne!(chain_hash("", &f), h);
        }
        // Stored hashes themselves are not part of the content.
        let mut g = e.clone();
        g.hash = "whatever".into();
        assert_eq!(chain_hash("", &g), h);
    }
}
