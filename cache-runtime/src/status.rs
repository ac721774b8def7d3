//! What a cache reports about itself, for health checks and dashboards:
//! where its connection to Redis stands, and what its local tier holds.

/// Where the calling runtime's connection to Redis stands
/// ([`Cache::connection_status`](crate::Cache::connection_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// The connection's first attempt has not ended yet: calls made now
    /// wait for it, within their deadline.
    Connecting,
    /// Connected: calls use Redis.
    Connected,
    /// Not connected: the last attempt failed, or the connection failed or
    /// stalled and is being replaced. Calls run uncached meanwhile, and the
    /// cache reconnects in the background. A cache that can never connect
    /// (an invalid `REDIS_URL` for [`Cache::global`](crate::Cache::global))
    /// is disconnected too.
    Disconnected,
}

impl ConnectionStatus {
    /// `"connecting"`, `"connected"` or `"disconnected"`, for a health
    /// check's answer or a log line.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::Disconnected => "disconnected",
        }
    }
}

/// What this process's local tier holds now
/// ([`Cache::local_tier_status`](crate::Cache::local_tier_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalTierStatus {
    /// The copies it holds.
    pub entries: u64,
    /// What those copies count against
    /// [`LocalTierSettings::max_bytes`](crate::LocalTierSettings::max_bytes):
    /// each copy its value's serialized size (before compression), or
    /// `max_bytes / max_entries` if that is more (so that `max_bytes`
    /// bounds the entries too).
    pub bytes: u64,
    /// Whether the tier listens to Redis for changes. Only then does it keep
    /// and serve copies: while Redis is unreachable it holds none, and calls
    /// read Redis (or, with Redis down, run their body).
    pub listening: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_its_own_name() {
        let names = [
            ConnectionStatus::Connecting,
            ConnectionStatus::Connected,
            ConnectionStatus::Disconnected,
        ]
        .map(ConnectionStatus::as_str);
        assert_eq!(names, ["connecting", "connected", "disconnected"]);
    }
}
