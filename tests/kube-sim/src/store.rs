//! The in-memory object store: objects by resource, namespace and name,
//! resource versions, and a watch history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::Resource;

/// How many past events a watch can resume from.
const HISTORY: usize = 4096;

/// Identifies a resource type in the store: `group/plural`.
pub fn resource_key(r: &Resource) -> String {
    format!("{}/{}", r.group, r.plural)
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The object's uid must be this.
    pub uid: Option<String>,
    /// The object's resourceVersion must be this.
    pub resource_version: Option<String>,
}

/// The characters the API server draws generated names from
/// (`k8s.io/apimachinery/pkg/util/rand`: no vowels, no look-alikes).
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `n` random characters from [`ALPHANUMS`], like `utilrand.String(n)`.
pub fn random_suffix(n: usize) -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().cycle().take(n).map(|b| char::from(ALPHANUMS[usize::from(*b) % ALPHANUMS.len()])).collect()
}

/// A change to one object.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resource version after the change.
    pub rv: u64,
    /// `group/plural` of the object.
    pub resource: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before it, for DELETED).
    pub object: Value,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    history: VecDeque<Event>,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3339 UTC timestamp, seconds precision, as the API server writes.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn meta(o: &Value, field: &str) -> String {
    o.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(HISTORY);
        Self { inner: Mutex::new(Inner { rv: 1, objects: BTreeMap::new(), history: VecDeque::new() }), events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn record(&self, inner: &mut Inner, resource: &str, kind: &'static str, object: Value) {
        let ev = Event { rv: inner.rv, resource: resource.to_string(), kind, object };
        inner.history.push_back(ev.clone());
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        let _ = self.events.send(ev);
    }

    /// Creates `obj` (kind and apiVersion filled from `r`).
    pub fn create(&self, r: &Resource, ns: &str, obj: Value) -> Result<Value, ApiError> {
        self.create_opts(r, ns, obj, false)
    }

    /// Creates `obj`, or with `dry_run` answers what would be created (a
    /// name, uid and timestamp, no resourceVersion) without storing it or
    /// telling watches, as the API server's dry-run storage does.
    pub fn create_opts(&self, r: &Resource, ns: &str, mut obj: Value, dry_run: bool) -> Result<Value, ApiError> {
        let name = meta(&obj, "name");
        let name = if name.is_empty() {
            let prefix = meta(&obj, "generateName");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &r.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            format!("{prefix}{}", random_suffix(5))
        } else {
            name
        };
        let key = (resource_key(r), if r.namespaced { ns.to_string() } else { String::new() }, name.clone());
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(r, &name));
        }
        if !dry_run {
            inner.rv += 1;
        }
        let rv = inner.rv;
        obj["apiVersion"] = json!(r.group_version());
        obj["kind"] = json!(r.kind);
        let m = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the object is not a JSON object"))?;
        let metadata = m.entry("metadata").or_insert_with(|| json!({}));
        metadata["name"] = json!(name);
        if r.namespaced {
            metadata["namespace"] = json!(ns);
        } else if let Some(mm) = metadata.as_object_mut() {
            mm.remove("namespace");
        }
        metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
        metadata["creationTimestamp"] = json!(now_rfc3339());
        if r.has_generation() {
            metadata["generation"] = json!(1);
        }
        if dry_run {
            if let Some(m) = metadata.as_object_mut() {
                m.remove("resourceVersion");
            }
            return Ok(obj);
        }
        metadata["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(key, obj.clone());
        self.record(&mut inner, &resource_key(r), "ADDED", obj.clone());
        Ok(obj)
    }

    /// One object.
    pub fn get(&self, r: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        let ns = if r.namespaced { ns } else { "" };
        self.lock()
            .objects
            .get(&(resource_key(r), ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(r, name))
    }

    /// Objects of `r` in `ns` (all namespaces when `None`), sorted by
    /// namespace and name, and the resource version of the list.
    pub fn list(&self, r: &Resource, ns: Option<&str>) -> (Vec<Value>, u64) {
        let key = resource_key(r);
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((k, n, _), _)| *k == key && ns.is_none_or(|want| !r.namespaced || n == want))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Replaces an object. A `resourceVersion` in `obj` must match (else
    /// Conflict); `generation` goes up when `spec` changes.
    pub fn update(&self, r: &Resource, ns: &str, name: &str, obj: Value) -> Result<Value, ApiError> {
        self.update_opts(r, ns, name, obj, false)
    }

    /// Replaces an object, or with `dry_run` answers the result (checked
    /// the same way, keeping the stored resourceVersion) without storing it.
    pub fn update_opts(
        &self,
        r: &Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ns = if r.namespaced { ns } else { "" };
        let key = (resource_key(r), ns.to_string(), name.to_string());
        let mut inner = self.lock();
        let old = inner.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(r, name))?;
        let sent_uid = meta(&obj, "uid");
        if !sent_uid.is_empty() && sent_uid != meta(&old, "uid") {
            return Err(ApiError::conflict_because(
                r,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {sent_uid}, UID in object meta: {}",
                    meta(&old, "uid")
                ),
            ));
        }
        let sent_rv = meta(&obj, "resourceVersion");
        if !sent_rv.is_empty() && sent_rv != meta(&old, "resourceVersion") {
            return Err(ApiError::conflict(r, name));
        }
        let rv = if dry_run { inner.rv } else { inner.rv + 1 };
        obj["apiVersion"] = json!(r.group_version());
        obj["kind"] = json!(r.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        for f in ["uid", "creationTimestamp", "name"] {
            obj["metadata"][f] = old["metadata"][f].clone();
        }
        if r.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        if r.has_generation() {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            let changed = obj.get("spec") != old.get("spec");
            obj["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("generation");
        }
        if dry_run {
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            return Ok(obj);
        }
        inner.rv = rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(key, obj.clone());
        self.record(&mut inner, &resource_key(r), "MODIFIED", obj.clone());
        Ok(obj)
    }

    /// Deletes an object, returning it.
    pub fn delete(&self, r: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.delete_opts(r, ns, name, &Preconditions::default(), false)
    }

    /// Deletes an object if `pre` holds (else 409 Conflict, with the API
    /// server's messages), returning it; with `dry_run` only checks.
    pub fn delete_opts(
        &self,
        r: &Resource,
        ns: &str,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ns = if r.namespaced { ns } else { "" };
        let key = (resource_key(r), ns.to_string(), name.to_string());
        let mut inner = self.lock();
        let current = inner.objects.get(&key).ok_or_else(|| ApiError::not_found(r, name))?;
        let (uid, rv) = (meta(current, "uid"), meta(current, "resourceVersion"));
        if let Some(want) = pre.uid.as_deref().filter(|w| *w != uid) {
            return Err(ApiError::precondition(
                r,
                name,
                &format!(
                    "the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                ),
            ));
        }
        if let Some(want) = pre.resource_version.as_deref().filter(|w| *w != rv) {
            return Err(ApiError::precondition(
                r,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
                ),
            ));
        }
        if dry_run {
            return Ok(current.clone());
        }
        let mut obj = inner.objects.remove(&key).ok_or_else(|| ApiError::not_found(r, name))?;
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.record(&mut inner, &resource_key(r), "DELETED", obj.clone());
        Ok(obj)
    }

    /// Events after `rv` still in the history (or `Err` if `rv` is too old),
    /// and a receiver for later ones. Atomic: nothing is missed in between.
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Event>, broadcast::Receiver<Event>), ApiError> {
        let inner = self.lock();
        let rx = self.events.subscribe();
        if inner.history.front().is_some_and(|first| rv + 1 < first.rv) {
            return Err(ApiError::gone(rv));
        }
        Ok((inner.history.iter().filter(|e| e.rv > rv).cloned().collect(), rx))
    }

    /// A list and a receiver for every change after it, taken atomically.
    pub fn list_and_watch(&self, r: &Resource, ns: Option<&str>) -> (Vec<Value>, u64, broadcast::Receiver<Event>) {
        let key = resource_key(r);
        let inner = self.lock();
        let rx = self.events.subscribe();
        let items = inner
            .objects
            .iter()
            .filter(|((k, n, _), _)| *k == key && ns.is_none_or(|want| !r.namespaced || n == want))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv, rx)
    }

    /// Every object of every resource (for RBAC evaluation).
    pub fn all_of(&self, resource: &str) -> Vec<Value> {
        self.lock().objects.iter().filter(|((k, _, _), _)| k == resource).map(|(_, v)| v.clone()).collect()
    }
}
