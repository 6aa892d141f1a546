//! Protocol versions and their negotiation.

/// Versions this build speaks, newest last.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// Capability: the agent can carry upgraded (HTTP 101) connections.
pub const CAP_UPGRADE: &str = "upgrade";

/// Capability: the agent may send GoAway on the control stream (it is
/// retiring the tunnel: certificate renewed, or shutting down); the relay
/// then opens no new stream on it.
pub const CAP_AGENT_GOAWAY: &str = "agent-goaway";

/// Capabilities this build offers.
pub const CAPABILITIES: &[&str] = &[CAP_UPGRADE, CAP_AGENT_GOAWAY];

/// Picks the highest version both sides speak, or `None` when there is none.
pub fn negotiate(offered: &[u32]) -> Option<u32> {
    offered.iter().copied().filter(|v| SUPPORTED_VERSIONS.contains(v)).max()
}

/// Capabilities offered by the peer that this build also supports.
pub fn common_capabilities(offered: &[String]) -> Vec<String> {
    offered.iter().filter(|c| CAPABILITIES.contains(&c.as_str())).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_common_version() {
        assert_eq!(negotiate(&[1, 7, 9]), Some(1));
        assert_eq!(negotiate(&[]), None);
        assert_eq!(negotiate(&[0, 2]), None);
    }

    #[test]
    fn keeps_only_known_capabilities() {
        let caps = common_capabilities(&["upgrade".into(), "teleport".into()]);
        assert_eq!(caps, vec!["upgrade".to_string()]);
    }
}
