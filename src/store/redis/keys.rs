//! The key layout. Every key of one session shares the hash tag `{b}` of its
//! bucket (`b` here stands for the bucket's tag, see [`Layout`]), so one Lua
//! script may touch them all, in standalone Redis and in Redis Cluster alike:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sk:{b}:s:<id>` | hash `v`, `d`, `w` | version, state JSON, the token of the write that stored them; TTL refreshed on every write |
//! | `sk:{b}:due` | sorted set | session id → deadline (epoch ms) or lease end |
//! | `sk:{b}:audit` | stream | audit events (the outbox) |
//! | `sk:{b}:c:<id>` | shard channel | updates of that session |
//! | `sk:{b}:hint` | shard channel | a deadline set earlier than every entry of the bucket |
//! | `sk:{b}:probe:<instance>` | shard channel | an instance's probe of its subscription on that slot |
//! | `sk:meta` | hash | `buckets` and `layout`: the bucket count and key layout this deployment was created with |
//! | `sk:{b}:rl:<h>` | string | a client limit's GCRA state (`h`: the client key's hash, which also picks the bucket); expires when idle |

use std::collections::HashMap;

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

/// Names of the key layout, stored in `sk:meta` as `layout`: bump it when
/// a change would move existing keys.
pub const LAYOUT_VERSION: &str = "slots-1";

/// Redis Cluster's slot count.
pub const SLOTS: u32 = 16_384;

/// The key names of one deployment. Bucket `b`'s hash tag is chosen so its
/// slot is the centre of the `b`-th of `B` equal slot ranges: a Cluster
/// whose primaries own equal contiguous ranges (what `redis-cli --cluster
/// create` and an even reshard give) then owns an equal share of the
/// buckets, within one. The plain decimal `b` as tag would hash anywhere.
#[derive(Clone, Debug)]
pub struct Layout {
    tags: Vec<String>,
    buckets: HashMap<String, u16>,
}

impl Layout {
    /// The tags of `buckets` buckets: for each target slot, the smallest
    /// decimal number that hashes to it (found in one pass over the numbers,
    /// a few hundred thousand CRC16s at most, once at start-up).
    pub fn new(buckets: u16) -> Self {
        let n = u32::from(buckets.max(1));
        let targets: Vec<u16> = (0..n)
            .map(|b| ((2 * b + 1) * SLOTS / (2 * n)) as u16)
            .collect();
        let mut wanted: HashMap<u16, Vec<u16>> = HashMap::new();
        for (b, &slot) in targets.iter().enumerate() {
            wanted.entry(slot).or_default().push(b as u16);
        }
        let mut tags = vec![String::new(); n as usize];
        let mut missing = n as usize;
        let mut i: u64 = 0;
        while missing > 0 {
            let candidate = i.to_string();
            if let Some(bs) = wanted.remove(&slot(&candidate)) {
                for b in bs {
                    tags[usize::from(b)] = candidate.clone();
                    missing -= 1;
                }
            }
            i += 1;
        }
        let buckets = tags
            .iter()
            .enumerate()
            .map(|(b, t)| (t.clone(), b as u16))
            .collect();
        Self { tags, buckets }
    }

    pub fn bucket_count(&self) -> u16 {
        self.tags.len() as u16
    }

    /// Which bucket a session lives in.
    pub fn bucket(&self, id: SessionId) -> u16 {
        bucket(id, self.bucket_count())
    }

    /// A client limit's state and its bucket, for the client whose key
    /// hashes to `h` (`limiter::ClientKey`); the hash also picks the
    /// bucket, so the limits of many clients settle in one script call per
    /// bucket.
    pub fn rate_limit(&self, h: u64) -> (u16, String) {
        let b = (h % u64::from(self.bucket_count())) as u16;
        (b, format!("sk:{{{}}}:rl:{h:016x}", self.tag(b)))
    }

    /// Bucket `b`'s hash tag (without braces).
    pub fn tag(&self, b: u16) -> &str {
        &self.tags[usize::from(b)]
    }

    /// The bucket of a key or channel name, from its hash tag.
    pub fn bucket_of(&self, name: &str) -> Option<u16> {
        self.buckets.get(hash_tag(name)).copied()
    }

    /// The state hash of a session.
    pub fn state(&self, b: u16, id: SessionId) -> String {
        format!("sk:{{{}}}:s:{id}", self.tag(b))
    }

    /// The deadline index of a bucket.
    pub fn due(&self, b: u16) -> String {
        format!("sk:{{{}}}:due", self.tag(b))
    }

    /// The outbox stream of a bucket (read by the audit drain and the webhooks).
    pub fn audit(&self, b: u16) -> String {
        format!("sk:{{{}}}:audit", self.tag(b))
    }

    /// The webhook schedule of a bucket (event id → due, or lease end).
    pub fn webhook_due(&self, b: u16) -> String {
        format!("sk:{{{}}}:wh:due", self.tag(b))
    }

    /// The webhook deliveries of a bucket (event id → delivery JSON).
    pub fn webhooks(&self, b: u16) -> String {
        format!("sk:{{{}}}:wh:q", self.tag(b))
    }

    /// The webhook dead letters of a bucket (event id → delivery JSON).
    pub fn webhook_dead(&self, b: u16) -> String {
        format!("sk:{{{}}}:wh:dead", self.tag(b))
    }

    /// The keys of bucket `b`'s webhook schedule, as `webhook.lua` expects them.
    pub fn webhook_keys(&self, b: u16) -> Vec<String> {
        vec![self.webhook_due(b), self.webhooks(b), self.webhook_dead(b)]
    }

    /// The shard channel of a session.
    pub fn channel(&self, b: u16, id: SessionId) -> String {
        format!("sk:{{{}}}:c:{id}", self.tag(b))
    }

    /// The bucket's hint channel: the scripts announce there each deadline
    /// set earlier than every entry of the bucket, so schedulers need not
    /// poll for it.
    pub fn hint_channel(&self, b: u16) -> String {
        format!("sk:{{{}}}:hint", self.tag(b))
    }

    /// An instance's own probe channel in bucket `b`'s slot: it publishes
    /// there and expects to hear itself, proving that its subscription on
    /// that slot's owner still delivers.
    pub fn probe_channel(&self, b: u16, instance: uuid::Uuid) -> String {
        format!("sk:{{{}}}:probe:{instance}", self.tag(b))
    }

    /// All keys one write touches, in the order the scripts expect them.
    pub fn session_keys(&self, id: SessionId) -> Vec<String> {
        let b = self.bucket(id);
        vec![
            self.state(b, id),
            self.due(b),
            self.audit(b),
            self.channel(b, id),
            self.hint_channel(b),
        ]
    }
}

/// Redis Cluster's `HASH_SLOT`: CRC16 (XMODEM) of the hash tag, mod 16384.
pub fn slot(name: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in hash_tag(name).as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
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
        .filter(|(tag, _)| !tag.is_empty())
        .map_or(name, |(tag, _)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_bucket_hash_tag_and_channels_map_back() {
        let layout = Layout::new(16);
        let id = SessionId::parse("6f1c2b1e-1111-4c1a-9a1a-000000000001").unwrap();
        let keys = layout.session_keys(id);
        let b = layout.bucket(id);
        let tag = format!("{{{}}}", layout.tag(b));
        assert!(keys.iter().all(|k| k.contains(&tag)), "{keys:?}");
        assert!(keys.iter().all(|k| layout.bucket_of(k) == Some(b)));
        assert_eq!(session_of_channel(&keys[3]), Some(id));
        let probe = layout.probe_channel(b, id.0);
        assert_eq!(session_of_channel(&probe), None);
        assert!(!is_hint_channel(&probe));
        assert_eq!(session_of_channel(&keys[4]), None);
        assert!(is_hint_channel(&keys[4]) && !is_hint_channel(&keys[3]));
        assert_eq!(layout.bucket_of(&probe), Some(b));
        assert_eq!(hash_tag("plain"), "plain");
    }

    #[test]
    fn slots_are_redis_cluster_slots() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("bar"), 5_061);
        assert_eq!(slot("sk:{foo}:anything"), 12_182);
    }

    #[test]
    fn every_bucket_sits_at_the_centre_of_its_slot_range() {
        for buckets in [1u16, 3, 16, 100, 1024, 16_384] {
            let layout = Layout::new(buckets);
            let n = u32::from(buckets);
            for b in 0..buckets {
                let want = (2 * u32::from(b) + 1) * SLOTS / (2 * n);
                assert_eq!(
                    u32::from(slot(layout.tag(b))),
                    want,
                    "bucket {b} of {buckets}"
                );
                assert_eq!(layout.bucket_of(&layout.due(b)), Some(b));
            }
        }
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
