//! A tenant's chat settings: `settings.chat` of the tenant (set with
//! `PUT /v1/tenants/{id}/settings`), validated when set.

use serde::{Deserialize, Serialize};

use crate::model::Tenant;

/// What a tenant allows chat to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatSettings {
    /// Commands `exec` may run, each an argument prefix (`["ls"]` allows
    /// `ls -l /`). Empty: exec is off.
    #[serde(default)]
    pub exec_allow_list: Vec<Vec<String>>,
    /// Destructive commands (delete, drain, scale to 0, rollout undo) also
    /// need a second tenant admin's approval before they can be confirmed.
    #[serde(default)]
    pub require_approval: bool,
    /// An OpenAI-compatible endpoint that may propose a command line for
    /// what the English grammar does not understand. Off when absent.
    #[serde(default)]
    pub llm: Option<LlmSettings>,
}

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL (`https://api.example.com/v1`); `/chat/completions` is added.
    pub url: String,
    /// The model name.
    pub model: String,
    /// Bearer key, if the endpoint needs one (never shown back, never logged).
    #[serde(default)]
    pub api_key: String,
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings").field("url", &self.url).field("model", &self.model).finish_non_exhaustive()
    }
}

/// Most allow-list entries.
const MAX_ALLOW: usize = 100;

impl ChatSettings {
    /// Reads `value` (the tenant's `settings.chat`), or says what is wrong.
    pub fn parse(value: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(v) = value else { return Ok(Self::default()) };
        let s: Self = serde_json::from_value(v.clone()).map_err(|e| format!("settings.chat: {e}"))?;
        if s.exec_allow_list.len() > MAX_ALLOW {
            return Err(format!("settings.chat.execAllowList: at most {MAX_ALLOW} entries"));
        }
        if s.exec_allow_list.iter().any(|e| e.is_empty() || e.iter().any(|w| w.is_empty() || w.len() > 256)) {
            return Err("settings.chat.execAllowList: each entry is a non-empty list of words, e.g. [\"ls\"]".into());
        }
        if let Some(l) = &s.llm {
            let ok = l.url.starts_with("https://") || l.url.starts_with("http://");
            if !ok || l.url.len() > 2048 || l.model.is_empty() {
                return Err("settings.chat.llm: url must be an http(s) URL and model must be set".into());
            }
        }
        Ok(s)
    }

    /// The settings of `tenant` (invalid ones read as none: they were
    /// validated when set).
    pub fn of(tenant: &Tenant) -> Self {
        Self::parse(tenant.settings.get("chat")).unwrap_or_default()
    }
}

/// `settings` as shown back: an LLM key replaced by `***`.
pub fn shown(mut settings: serde_json::Value) -> serde_json::Value {
    if let Some(k) = settings.pointer_mut("/chat/llm/apiKey")
        && k.as_str().is_some_and(|k| !k.is_empty())
    {
        *k = serde_json::Value::String("***".into());
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_validated_and_keys_hidden() {
        assert_eq!(ChatSettings::parse(None), Ok(ChatSettings::default()));
        let s = ChatSettings::parse(Some(
            &json!({"execAllowList": [["ls"], ["cat", "/etc/os-release"]], "requireApproval": true}),
        ))
        .expect("valid");
        assert!(s.require_approval);
        assert!(ChatSettings::parse(Some(&json!({"execAllowlist": []}))).is_err(), "unknown keys are refused");
        assert!(ChatSettings::parse(Some(&json!({"execAllowList": [[]]}))).is_err());
        assert!(ChatSettings::parse(Some(&json!({"llm": {"url": "file:///etc/passwd", "model": "m"}}))).is_err());
        let shown = shown(json!({"chat": {"llm": {"url": "https://x", "model": "m", "apiKey": "sk-secret"}}}));
        assert_eq!(shown["chat"]["llm"]["apiKey"], "***");
        let l = LlmSettings { url: "https://x".into(), model: "m".into(), api_key: "sk-secret".into() };
        assert!(!format!("{l:?}").contains("sk-secret"));
    }
}
