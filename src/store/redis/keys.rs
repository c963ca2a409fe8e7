//! The key layout. Every key of one session shares the hash tag `{b}` of its
//! bucket, so one Lua script may touch them all, in standalone Redis and in
//! Redis Cluster alike:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sk:{b}:s:<id>` | hash `v`, `d` | version, state JSON; TTL refreshed on every write |
//! | `sk:{b}:due` | sorted set | session id → deadline (epoch ms) or lease end |
//! | `sk:{b}:audit` | stream | audit events (the outbox) |
//! | `sk:{b}:c:<id>` | shard channel | updates of that session |
//! | `sk:{b}:hint` | shard channel | a deadline set earlier than every entry of the bucket |
//! | `sk:meta` | hash | `buckets`: the bucket count this deployment was created with |
//! | `sk:rl:{h}` | string | a rate limit's GCRA state (`h`: hash of the client or session key); expires when idle |

use crate::domain::SessionId;

/// The deployment-wide metadata hash.
pub const META: &str = "sk:meta";

/// The lock that lets one instance at a time sweep the deadline index.
pub const SWEEP_LOCK: &str = "sk:sweep";

/// Which bucket a session lives in: FNV-1a over the UUID's bytes, so every
/// instance (and any other tool) computes the same bucket.
pub fn bucket(id: SessionId, buckets: u16) -> u16 {
    (fnv1a(id.0.as_bytes()) % u64::from(buckets.max(1))) as u16
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A rate limit's state. The key is hashed (FNV-1a, hex) so any client
/// string makes a short key, and is its own hash tag: limits spread over a
/// Cluster's slots.
pub fn rate_limit(key: &str) -> String {
    format!("sk:rl:{{{:016x}}}", fnv1a(key.as_bytes()))
}

/// The state hash of a session.
pub fn state(b: u16, id: SessionId) -> String {
    format!("sk:{{{b}}}:s:{id}")
}

/// The deadline index of a bucket.
pub fn due(b: u16) -> String {
    format!("sk:{{{b}}}:due")
}

/// The audit outbox stream of a bucket.
pub fn audit(b: u16) -> String {
    format!("sk:{{{b}}}:audit")
}

/// The shard channel of a session.
pub fn channel(b: u16, id: SessionId) -> String {
    format!("sk:{{{b}}}:c:{id}")
}

/// The bucket's hint channel: the scripts announce there each deadline set
/// earlier than every entry of the bucket, so schedulers need not poll for it.
pub fn hint_channel(b: u16) -> String {
    format!("sk:{{{b}}}:hint")
}

/// Whether a channel name is a hint channel `sk:{b}:hint`.
pub fn is_hint_channel(channel: &str) -> bool {
    channel.ends_with("}:hint")
}

/// The session a channel name `sk:{b}:c:<id>` belongs to.
pub fn session_of_channel(channel: &str) -> Option<SessionId> {
    let (prefix, id) = channel.rsplit_once(':')?;
    prefix.ends_with(":c").then(|| SessionId::parse(id))?
}

/// The `{…}` hash tag of a key or channel (the whole name if it has none):
/// names with the same tag live in the same Cluster slot.
pub fn hash_tag(name: &str) -> &str {
    name.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(name, |(tag, _)| tag)
}

/// An instance's own probe channel: it publishes there and expects to hear
/// itself, proving its pub/sub link still delivers.
pub fn probe_channel(instance: uuid::Uuid) -> String {
    format!("sk:{{0}}:probe:{instance}")
}

/// All keys one write touches, in the order the scripts expect them.
pub fn session_keys(id: SessionId, buckets: u16) -> Vec<String> {
    let b = bucket(id, buckets);
    vec![
        state(b, id),
        due(b),
        audit(b),
        channel(b, id),
        hint_channel(b),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_bucket_hash_tag_and_channels_map_back() {
        let id = SessionId::parse("6f1c2b1e-1111-4c1a-9a1a-000000000001").unwrap();
        let keys = session_keys(id, 16);
        let tag = format!("{{{}}}", bucket(id, 16));
        assert!(keys.iter().all(|k| k.contains(&tag)), "{keys:?}");
        assert_eq!(session_of_channel(&keys[3]), Some(id));
        assert_eq!(session_of_channel(&probe_channel(id.0)), None);
        assert_eq!(session_of_channel(&keys[4]), None);
        assert!(is_hint_channel(&keys[4]) && !is_hint_channel(&keys[3]));
        assert_eq!(hash_tag(&keys[3]), bucket(id, 16).to_string());
        assert_eq!(hash_tag(&probe_channel(id.0)), "0");
        assert_eq!(hash_tag("plain"), "plain");
    }

    #[test]
    fn buckets_spread_sessions_evenly() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u128 {
            counts[bucket(SessionId(uuid::Uuid::from_u128(i)), 16) as usize] += 1;
        }
        // Sequential ids (the worst realistic case) still spread within ±10 %.
        assert!(
            counts.iter().all(|&c| (900..=1100).contains(&c)),
            "{counts:?}"
        );
    }
}
