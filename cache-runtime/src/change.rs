//! What an eviction or a write changes in Redis: the [`Target`]s a caller
//! names, the [`Change`]s that reads in flight and local copies hear of, and
//! the invalidation message that carries a change to other processes.

/// One thing to evict, as a full key (prefix included).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// One entry.
    Key(String),
    /// Every entry stored with this tag (the tag set's full key).
    Tag(String),
    /// Every key that starts with this full prefix.
    Prefix(String),
}

/// What changed in Redis, for reads in flight and local copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Key(String),
    Prefix(String),
    /// A tag, whose members are not known here, or anything at all: every
    /// key is covered.
    All,
}

impl Change {
    /// What an eviction of `target` changes.
    pub(crate) fn of(target: &Target) -> Change {
        match target {
            Target::Key(key) => Change::Key(key.clone()),
            Target::Prefix(prefix) => Change::Prefix(prefix.clone()),
            Target::Tag(_) => Change::All,
        }
    }

    /// Whether this change may have touched `key`.
    pub(crate) fn covers(&self, key: &str) -> bool {
        match self {
            Change::Key(changed) => changed == key,
            Change::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Change::All => true,
        }
    }

    /// The invalidation message: `<kind> <sender> <key or prefix>`, where
    /// the sender tells a process its own messages apart.
    pub(crate) fn message(&self, sender: &str) -> String {
        let (kind, text) = match self {
            Change::Key(key) => ("k", key.as_str()),
            Change::Prefix(prefix) => ("p", prefix.as_str()),
            Change::All => ("a", ""),
        };
        format!("{kind} {sender} {text}")
    }

    /// Reads an invalidation message: its sender and its change. A kind
    /// this release does not know covers everything, to be safe.
    #[cfg(any(test, feature = "local"))]
    pub(crate) fn parse(message: &str) -> Option<(&str, Change)> {
        let mut parts = message.splitn(3, ' ');
        let (Some(kind), Some(sender), text) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let text = text.unwrap_or_default().to_owned();
        let change = match kind {
            "k" => Change::Key(text),
            "p" => Change::Prefix(text),
            _ => Change::All,
        };
        Some((sender, change))
    }
}

/// The invalidation channel of caches with this key prefix.
pub(crate) fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}#invalidate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for change in [
            Change::Key("user:1".into()),
            Change::Prefix("order:".into()),
            Change::All,
        ] {
            let message = change.message("me");
            assert_eq!(Change::parse(&message), Some(("me", change)));
        }
        assert_eq!(Change::parse("x me"), Some(("me", Change::All)));
        assert_eq!(Change::parse("k"), None);
    }

    #[test]
    fn changes_cover_their_keys() {
        assert!(Change::Key("a".into()).covers("a"));
        assert!(!Change::Key("a".into()).covers("ab"));
        assert!(Change::Prefix("a".into()).covers("ab"));
        assert!(Change::All.covers("anything"));
    }
}
