//! Each cluster's resource types, read from its live discovery through the
//! kube path and kept for a few minutes: what a chat command's resource
//! words resolve against (CRDs included).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubechat_chat::discovery::Discovery;
use serde_json::Value;

use super::client::{ClusterClient, KubeError};

/// How long a cluster's discovery is trusted.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Discovery per cluster.
#[derive(Default)]
pub struct DiscoveryCache {
    entries: Mutex<HashMap<String, (Instant, Arc<Discovery>)>>,
}

impl DiscoveryCache {
    /// The cluster's discovery: cached, or read now (`/api/v1`, `/apis`
    /// and each group's preferred version). `fresh` reads it again (a word
    /// did not resolve: a CRD may be new).
    pub async fn get(&self, client: &ClusterClient, fresh: bool) -> Result<Arc<Discovery>, KubeError> {
        let id = client.cluster_id().to_string();
        if !fresh
            && let Some((at, d)) = self.lock().get(&id)
            && at.elapsed() < MAX_AGE
        {
            return Ok(d.clone());
        }
        let d = Arc::new(read(&client.apart()).await?);
        let mut entries = self.lock();
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(id, (Instant::now(), d.clone()));
        Ok(d)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Discovery>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn read(client: &ClusterClient) -> Result<Discovery, KubeError> {
    let mut lists = vec![client.get("/api/v1").await?];
    let groups = client.get("/apis").await?;
    for g in groups["groups"].as_array().into_iter().flatten() {
        let Some(gv) = g["preferredVersion"]["groupVersion"].as_str() else { continue };
        match client.get(&format!("/apis/{gv}")).await {
            Ok(list) => lists.push(list),
            // An aggregated API that is down (metrics-server) leaves its
            // group out, as kubectl does, instead of failing every command.
            Err(e) if e.code == 503 || e.code == 404 => {
                tracing::debug!(group = gv, error = %e, "a discovery group is unavailable");
            }
            Err(e) => return Err(e),
        }
    }
    for list in &mut lists {
        if list.get("groupVersion").is_none() {
            list["groupVersion"] = Value::String("v1".into());
        }
    }
    Ok(Discovery::from_resource_lists(&lists))
}
