//! The production backend: Redis (standalone or Cluster) through fred.
//!
//! A pool of connections carries commands; a dedicated connection carries
//! sharded pub/sub. Every write is one `EVALSHA` of `write.lua` (see
//! [`keys`] for the layout), so a switch costs exactly two round trips: the
//! `HGET` of the state and the script. Every call is bounded by
//! `REDIS_TIMEOUT_MS`; a Redis outage surfaces as [`StoreError::Unavailable`]
//! (503) and the clients reconnect by themselves.

pub mod keys;
mod pubsub;
mod supervisor;
mod wakeups;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, HashesInterface, KeysInterface, LuaInterface, PubsubInterface, SortedSetsInterface,
    StreamsInterface,
};
use fred::prelude::{Builder, Config as FredConfig, ReconnectPolicy, ServerConfig};
use fred::types::Value;
use fred::types::config::ClusterDiscoveryPolicy;
use fred::types::scan::{ScanResult, Scanner};
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions};
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt};
use supervisor::Connections;
use thiserror::Error;
use tokio::sync::broadcast;

use super::{
    Delivery, FeedEvent, OutboxEntry, OutboxGroup, OutboxStats, RateDecision, Receipt, Settle,
    StateJson, Store, StoreError, Swept, WebhookStats, Write, expiry_after, index_needs_repair,
};
use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::domain::{Session, SessionId, Timestamp};
use keys::Layout;
use wakeups::Wakeups;

/// How long one instance holds the sweep lock (well under the sweep interval).
const SWEEP_LOCK_MS: i64 = 10_000;
/// Capacity of the instance's update feed (and of fred's message channel).
const FEED_CAPACITY: usize = 4_096;

/// Accepted URL schemes (TLS for the `rediss` ones).
const SCHEMES: [&str; 4] = ["redis", "rediss", "redis-cluster", "rediss-cluster"];

/// Settings for [`RedisStore::connect`], taken from the server configuration.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://`, `rediss://` (TLS), or `redis-cluster://`/`rediss-cluster://`.
    pub url: String,
    /// Treat `url` as one node of a Redis Cluster.
    pub cluster: bool,
    pub buckets: u16,
    pub ttl_seconds: u64,
    /// Bound on every command, so an outage answers 503 instead of hanging.
    pub timeout: Duration,
    pub pool_size: usize,
    /// The outbox's consumer groups; none: writes append no events (only
    /// useful with a drain or webhooks).
    pub outbox: Vec<OutboxGroup>,
}

/// Why the Redis backend could not start.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("invalid REDIS_URL: {0}")]
    Url(String),
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error(
        "BUCKETS={configured} but this Redis was set up with {stored} buckets (sk:meta); \
         every instance of a deployment must use the same BUCKETS"
    )]
    BucketMismatch { configured: u16, stored: String },
    #[error(
        "Redis holds keys of another layout ({stored}, this build uses {}): \
         let its sessions expire or flush it before switching builds",
        keys::LAYOUT_VERSION
    )]
    LayoutMismatch { stored: String },
}

/// The scripts, loaded at start-up and called by SHA (reloaded on NOSCRIPT).
struct Scripts {
    write: Script,
    delete: Script,
    claim: Script,
    reindex: Script,
    ack: Script,
    settle: Script,
    earliest: Script,
    webhook: Script,
    webhook_claim: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            write: Script::from_lua(include_str!("write.lua")),
            delete: Script::from_lua(include_str!("delete.lua")),
            claim: Script::from_lua(include_str!("claim.lua")),
            reindex: Script::from_lua(include_str!("reindex.lua")),
            ack: Script::from_lua(include_str!("ack.lua")),
            settle: Script::from_lua(include_str!("settle.lua")),
            earliest: Script::from_lua(include_str!("earliest.lua")),
            webhook: Script::from_lua(include_str!("webhook.lua")),
            webhook_claim: Script::from_lua(include_str!("webhook_claim.lua")),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.write,
            &self.delete,
            &self.claim,
            &self.reindex,
            &self.ack,
            &self.settle,
            &self.earliest,
            &self.webhook,
            &self.webhook_claim,
        ]
    }
}

/// Redis-backed state store.
pub struct RedisStore {
    pool: Connections,
    subscriber: SubscriberClient,
    scripts: Scripts,
    /// Key names, with each bucket's balanced hash tag.
    layout: Layout,
    options: RedisOptions,
    feed: broadcast::Sender<FeedEvent>,
    /// The instance's pub/sub probes, one per bucket's slot.
    probes: Arc<pubsub::Probes>,
    /// When the scheduler next polls the due sets.
    wakeups: Arc<Wakeups>,
}

impl RedisStore {
    /// Connects, checks `BUCKETS` against `sk:meta`, loads the scripts and
    /// starts draining pub/sub. Fails if Redis cannot be reached within the
    /// connection timeout: an instance that never had a store is not started.
    pub async fn connect(options: RedisOptions) -> Result<Self, ConnectError> {
        let scheme = options.url.split("://").next().unwrap_or_default();
        if !SCHEMES.contains(&scheme) || !options.url.contains("://") {
            return Err(ConnectError::Url(format!(
                "expected one of {}:// (got {:?})",
                SCHEMES.join("://, "),
                scheme
            )));
        }
        let url = cluster_url(&options.url, options.cluster);
        let mut config =
            FredConfig::from_url(&url).map_err(|e| ConnectError::Url(e.details().to_owned()))?;
        // Rediscover the cluster through any node last seen, not only the
        // nodes in the URL: with the default, a client whose one URL node was
        // the primary that died could never read the slot map again.
        if let ServerConfig::Clustered { policy, .. } = &mut config.server {
            *policy = ClusterDiscoveryPolicy::UseCache;
        }
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = options.timeout;
                p.broadcast_channel_capacity = FEED_CAPACITY;
            })
            .with_connection_config(|c| {
                c.connection_timeout = options.timeout.max(Duration::from_secs(1));
                c.internal_command_timeout = options.timeout.max(Duration::from_secs(1));
                // A command is tried again after a Cluster redirect (MOVED,
                // ASK: it did not run) or a dropped connection (it may have
                // run). The write script recognises its own write replayed
                // (by its token); a replayed delete finds the session gone,
                // which counts as deleted. What a replay can cost elsewhere
                // is small: a client limit's settle counts its batch twice, claimed
                // timeouts wait for their lease, read outbox entries wait to
                // be reclaimed as idle. The command timeout bounds all tries.
                // More tries would not help a reshard: an ASK to a node the
                // client has no connection to yet stalls the client for a
                // reconnect delay per try left, and then ends it (see
                // `supervisor`); failing fast gets it replaced sooner.
                c.max_command_attempts = 3;
            })
            // Reconnect forever, backing off from 10 ms to 1 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 10, 1_000, 2));
        let clients = (0..options.pool_size.max(1))
            .map(|_| builder.build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| ConnectError::Connect(e.to_string()))?;

        let startup = Duration::from_secs(10);
        let connected = async {
            let pool = Connections::connect(clients).await?;
            Ok::<_, fred::error::Error>((pool, subscriber.init().await?))
        };
        let (pool, subscriber_task) = match tokio::time::timeout(startup, connected).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return Err(ConnectError::Connect(e.to_string())),
            Err(_) => {
                return Err(ConnectError::Connect(format!(
                    "no answer within {startup:?}"
                )));
            }
        };

        check_layout(&pool, options.buckets).await?;
        let layout = Layout::new(options.buckets);
        for &group in &options.outbox {
            for b in 0..options.buckets {
                create_group(&pool.next(), &layout, b, group)
                    .await
                    .map_err(|e| {
                        ConnectError::Connect(format!("creating the {} group: {e}", group.name()))
                    })?;
            }
        }
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .load(&pool.next())
                .await
                .map_err(|e| ConnectError::Connect(format!("loading scripts: {e}")))?;
        }

        let feed = broadcast::channel(FEED_CAPACITY).0;
        let probes = pubsub::Probes::new(&layout, uuid::Uuid::new_v4());
        let wakeups = Arc::new(Wakeups::default());
        tokio::spawn(pubsub::drain(
            subscriber.clone(),
            feed.clone(),
            probes.clone(),
            wakeups.clone(),
        ));
        // One SSUBSCRIBE per channel (each bucket its own slot), pipelined.
        let channels = probes
            .channels()
            .iter()
            .cloned()
            .chain((0..options.buckets).map(|b| layout.hint_channel(b)));
        for subscribed in join_all(channels.map(|c| subscriber.ssubscribe(c))).await {
            subscribed.map_err(|e| {
                ConnectError::Connect(format!("subscribing the probe and hint channels: {e}"))
            })?;
        }
        supervisor::restart_on_exit(subscriber.clone(), subscriber_task, {
            let (subscriber, wakeups, feed) = (subscriber.clone(), wakeups.clone(), feed.clone());
            move || {
                let (subscriber, wakeups, feed) =
                    (subscriber.clone(), wakeups.clone(), feed.clone());
                async move { pubsub::resume(&subscriber, &wakeups, &feed).await }
            }
        });
        tokio::spawn(pubsub::probe(
            pool.clone(),
            subscriber.clone(),
            probes.clone(),
        ));
        if options.cluster {
            let slots = (0..options.buckets)
                .map(|b| keys::slot(layout.tag(b)))
                .collect();
            tokio::spawn(pubsub::follow_topology(
                pool.clone(),
                subscriber.clone(),
                slots,
                feed.clone(),
                wakeups.clone(),
            ));
        }
        Ok(Self {
            pool,
            subscriber,
            scripts,
            layout,
            options,
            feed,
            probes,
            wakeups,
        })
    }

    fn bucket(&self, id: SessionId) -> u16 {
        self.layout.bucket(id)
    }

    /// Runs a write-shaped script (`{1}`, `{0, stored version or -1}` or
    /// `{2, retry after µs, reset µs}`).
    async fn run_versioned(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<(), StoreError> {
        let reply: Vec<i64> = run_script(&self.pool, script, keys, args)
            .await
            .map_err(unavailable)?;
        let us = |v: i64| u64::try_from(v).unwrap_or(0);
        match reply.as_slice() {
            [1] => Ok(()),
            [0, actual] => Err(StoreError::Conflict {
                actual: u64::try_from(*actual).ok(),
            }),
            [2, retry, reset] => Err(StoreError::RateLimited(RateDecision {
                allowed: false,
                remaining: 0,
                retry_after_us: us(*retry),
                reset_us: us(*reset),
            })),
            other => Err(StoreError::Corrupt(format!(
                "unexpected script reply {other:?}"
            ))),
        }
    }

    /// `EXPIRE` seconds for the write script, or '' to keep the current TTL.
    fn ttl_argument(&self, write: &Write<'_>) -> Value {
        if !write.refresh_ttl {
            return "".into();
        }
        let ttl_ms =
            i64::try_from(self.options.ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ms = expiry_after(write, ttl_ms) - write.now.ms();
        // Whole seconds, rounded up.
        Value::Integer(ms.saturating_add(999) / 1000)
    }

    async fn write(&self, write: Write<'_>) -> Result<(), StoreError> {
        let id = write.session.session_id;
        let mut args: Vec<Value> = vec![
            num(write.expected_version),
            num(write.session.version),
            write.state.as_str().into(),
            self.ttl_argument(&write),
            id.to_string().into(),
            write
                .deadline
                .map(|d| d.ms().to_string())
                .unwrap_or_default()
                .into(),
            write.message.clone().into(),
            // Tells a retry of this very call (after a lost reply or a
            // redirect) from another writer's.
            uuid::Uuid::new_v4().simple().to_string().into(),
        ];
        match write.limit {
            Some(limit) => args.extend([limit.interval_us.into(), i64::from(limit.burst).into()]),
            None => args.extend(["".into(), "".into()]),
        }
        if !self.options.outbox.is_empty() {
            // A snapshot of the state being written travels once, as ARGV[3].
            for event in write.events {
                if event.state_snapshot.as_ref() == Some(&write.state) {
                    let bare = AuditEvent {
                        state_snapshot: None,
                        ..event.clone()
                    };
                    args.extend([encode_event(&bare)?.into(), "1".into()]);
                } else {
                    args.extend([encode_event(event)?.into(), "".into()]);
                }
            }
        }
        let keys = self.layout.session_keys(id);
        self.run_versioned(&self.scripts.write, keys, args).await
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn create(&self, write: Write<'_>) -> Result<(), StoreError> {
        match self
            .write(Write {
                expected_version: 0,
                ..write
            })
            .await
        {
            Err(StoreError::Conflict { .. }) => Err(StoreError::AlreadyExists),
            other => other,
        }
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let key = self.layout.state(self.bucket(id), id);
        let json: Option<String> = self
            .pool
            .run(|client| {
                let key = key.clone();
                async move { client.hget(key, "d").await }
            })
            .await
            .map_err(unavailable)?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("session {id}: {e}")))
        })
        .transpose()
    }

    async fn compare_and_set(&self, write: Write<'_>) -> Result<(), StoreError> {
        self.write(write).await
    }

    async fn delete(
        &self,
        id: SessionId,
        expected_version: u64,
        event: &AuditEvent,
        message: &Bytes,
    ) -> Result<(), StoreError> {
        let event = if !self.options.outbox.is_empty() {
            encode_event(event)?
        } else {
            String::new()
        };
        let args: Vec<Value> = vec![
            num(expected_version),
            id.to_string().into(),
            message.clone().into(),
            event.into(),
        ];
        let keys = self.layout.session_keys(id);
        self.run_versioned(&self.scripts.delete, keys, args).await
    }

    async fn subscribe(&self, id: SessionId) -> Result<(), StoreError> {
        let channel = self.layout.channel(self.bucket(id), id);
        self.subscriber
            .ssubscribe(channel)
            .await
            .map_err(unavailable)
    }

    async fn unsubscribe(&self, id: SessionId) -> Result<(), StoreError> {
        let channel = self.layout.channel(self.bucket(id), id);
        self.subscriber
            .sunsubscribe(channel)
            .await
            .map_err(unavailable)
    }

    fn feed(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.wakeups.poll_started(now);
        // First the earliest entry of every bucket; then the claim script
        // on the buckets that have something due. Concurrent calls on one
        // connection are pipelined by fred: one batch per step.
        let client = &self.pool.next();
        let mut next = i64::MAX;
        let mut ready = Vec::new();
        for (b, first) in self.earliest(client).await?.into_iter().enumerate() {
            match first {
                Some(at) if at <= now.ms() => ready.extend(u16::try_from(b)),
                Some(at) => next = next.min(at),
                None => {}
            }
        }
        let lease_end = now.plus(lease_ms).ms();
        let claims = ready.into_iter().map(|b| {
            let args: Vec<Value> = vec![now.ms().into(), lease_end.into(), (limit as i64).into()];
            client.evalsha::<Vec<String>, _, _, _>(
                self.scripts.claim.sha1().clone(),
                self.layout.due(b),
                args,
            )
        });
        let mut due = Vec::new();
        for reply in join_all(claims).await {
            match reply {
                Ok(reply) => {
                    let (earliest, ids) = reply.split_first().unzip();
                    next = next.min(earliest.and_then(|s| parse_score(s)).unwrap_or(i64::MAX));
                    due.extend(
                        ids.unwrap_or_default()
                            .iter()
                            .filter_map(|id| SessionId::parse(id)),
                    );
                }
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    // Redis lost its scripts (restart, SCRIPT FLUSH): reload for the next poll.
                    self.scripts.claim.load(client).await.map_err(unavailable)?;
                    next = now.ms();
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        self.wakeups.poll_finished(next);
        Ok(due)
    }

    async fn reindex(
        &self,
        id: SessionId,
        version: u64,
        deadline: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.set_index(id, version, deadline, None).await.map(drop)
    }

    /// One instance at a time (a short `SET NX` lock); SCANs the state keys
    /// (of every primary, on a Cluster).
    async fn sweep(&self, now: Timestamp, lease_ms: i64) -> Result<Swept, StoreError> {
        let client = &self.pool.next();
        let token = uuid::Uuid::new_v4().to_string();
        let locked: Option<String> = client
            .set(
                keys::SWEEP_LOCK,
                token.as_str(),
                Some(Expiration::PX(SWEEP_LOCK_MS)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(Swept::default());
        }
        let swept = self.sweep_buckets(client, now, lease_ms).await;
        // Give the lock back if it is still ours (it expires anyway).
        let holder: Option<String> = client.get(keys::SWEEP_LOCK).await.map_err(unavailable)?;
        if holder.as_deref() == Some(token.as_str()) {
            let _: i64 = client.del(keys::SWEEP_LOCK).await.map_err(unavailable)?;
        }
        swept
    }

    async fn wait_for_due(&self, clock: &Clock) {
        self.wakeups.wait(clock).await;
    }

    async fn outbox_read(
        &self,
        group: OutboxGroup,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // Standalone: every stream in one command. Cluster: one per bucket
        // (each stream is its own slot), pipelined on one connection.
        let count = limit as u64;
        let client = &self.pool.next();
        let groups = self.buckets_per_call();
        let reads = groups.iter().map(|buckets| async move {
            let streams: Vec<String> = buckets.iter().map(|&b| self.layout.audit(b)).collect();
            let ids = vec![">"; streams.len()];
            let reply = client
                .xreadgroup::<Value, _, _, _, _>(
                    group.name(),
                    consumer,
                    Some(count),
                    None,
                    false,
                    streams,
                    ids,
                )
                .await;
            (buckets, reply)
        });
        let mut entries = Vec::new();
        let mut failed = None;
        for (buckets, reply) in join_all(reads).await {
            match reply {
                // XREADGROUP answers [[stream, entries], …] (or nil: nothing new).
                Ok(reply) => {
                    for stream in values(reply) {
                        let mut parts = values(stream).into_iter();
                        let bucket = parts
                            .next()
                            .and_then(|key| self.layout.bucket_of(&key.as_string()?));
                        if let (Some(b), Some(list)) = (bucket, parts.next()) {
                            entries.extend(stream_entries(b, list));
                        }
                    }
                }
                Err(e) => {
                    for &b in buckets {
                        failed = failed.or(self
                            .on_outbox_error(client, b, group, e.clone())
                            .await
                            .err());
                    }
                }
            }
        }
        read_or_failed(entries, failed)
    }

    async fn outbox_reclaim(
        &self,
        group: OutboxGroup,
        consumer: &str,
        min_idle_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let count = limit as u64;
        let client = &self.pool.next();
        let claims = (0..self.options.buckets).map(|b| async move {
            let reply = client
                .xautoclaim::<Value, _, _, _, _>(
                    self.layout.audit(b),
                    group.name(),
                    consumer,
                    min_idle_ms,
                    "0-0",
                    Some(count),
                    false,
                )
                .await;
            (b, reply)
        });
        let mut entries = Vec::new();
        let mut failed = None;
        for (b, reply) in join_all(claims).await {
            match reply {
                // XAUTOCLAIM answers [next cursor, entries, deleted ids].
                Ok(reply) => {
                    if let Some(list) = values(reply).into_iter().nth(1) {
                        entries.extend(stream_entries(b, list));
                    }
                }
                Err(e) => failed = failed.or(self.on_outbox_error(client, b, group, e).await.err()),
            }
        }
        read_or_failed(entries, failed)
    }

    async fn outbox_ack(&self, group: OutboxGroup, receipts: &[Receipt]) -> Result<(), StoreError> {
        let mut by_bucket: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
        for r in receipts {
            by_bucket.entry(r.bucket).or_default().push(&r.id);
        }
        let by_bucket: Vec<(u16, Vec<&str>)> = by_bucket.into_iter().collect();
        // Standalone: one script call for every stream. Cluster: one per
        // stream (each its own slot), pipelined.
        let calls: Vec<&[(u16, Vec<&str>)]> = if self.options.cluster {
            by_bucket.chunks(1).collect()
        } else {
            vec![&by_bucket]
        };
        let client = &self.pool.next();
        let acks = calls.into_iter().filter(|c| !c.is_empty()).map(|streams| {
            let keys: Vec<String> = streams.iter().map(|(b, _)| self.layout.audit(*b)).collect();
            let mut args: Vec<Value> = vec![group.name().into()];
            args.extend(streams.iter().map(|(_, ids)| Value::from(ids.len() as i64)));
            args.extend(
                streams
                    .iter()
                    .flat_map(|(_, ids)| ids.iter().map(|&id| Value::from(id))),
            );
            self.scripts
                .ack
                .evalsha_with_reload::<i64, _, _>(client, keys, args)
        });
        for acked in join_all(acks).await {
            acked.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn outbox_stats(&self, group: OutboxGroup) -> Result<OutboxStats, StoreError> {
        let client = &self.pool.next();
        let reads = (0..self.options.buckets).map(|b| async move {
            let key = self.layout.audit(b);
            let (len, pending, first) = tokio::join!(
                client.xlen::<u64, _>(&key),
                client.xpending::<Value, _, _, _>(&key, group.name(), ()),
                client.xrange::<Value, _, _, _>(&key, "-", "+", Some(1)),
            );
            (len, pending, first)
        });
        let mut stats = OutboxStats::default();
        for (len, pending, first) in join_all(reads).await {
            stats.backlog += len.map_err(unavailable)?;
            // XPENDING answers [count, first id, last id, consumers]; an
            // error means the group is not there yet: nothing pending.
            if let Ok(summary) = pending {
                let count = values(summary).into_iter().next();
                stats.pending += count.and_then(|c| c.as_u64()).unwrap_or(0);
            }
            // Entry ids are "<append time in ms>-<seq>".
            let first_ms = values(first.map_err(unavailable)?)
                .into_iter()
                .next()
                .and_then(|entry| values(entry).into_iter().next()?.as_string())
                .and_then(|id| id.split('-').next()?.parse::<i64>().ok());
            if let Some(ms) = first_ms {
                stats.oldest = Some(stats.oldest.map_or(Timestamp(ms), |o| o.min(Timestamp(ms))));
            }
        }
        Ok(stats)
    }

    async fn webhook_schedule(&self, deliveries: &[(Delivery, i64)]) -> Result<(), StoreError> {
        let client = &self.pool.next();
        let calls = deliveries.iter().map(|(d, due)| async move {
            let json = serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let args: Vec<Value> = vec![
                "schedule".into(),
                d.event_id.as_str().into(),
                json.into(),
                (*due).into(),
            ];
            self.webhook_op(client, d.session_id, args).await.map(drop)
        });
        join_all(calls).await.into_iter().collect()
    }

    async fn webhook_claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = &self.pool.next();
        let groups = self.buckets_per_call();
        let args: Vec<Value> = vec![now_ms.into(), lease_until_ms.into(), (limit as i64).into()];
        let claims = groups.iter().map(|buckets| {
            let keys: Vec<String> = buckets
                .iter()
                .flat_map(|&b| [self.layout.webhook_due(b), self.layout.webhooks(b)])
                .collect();
            self.scripts
                .webhook_claim
                .evalsha_with_reload::<Vec<String>, _, _>(client, keys, args.clone())
        });
        let mut claimed = Vec::new();
        for reply in join_all(claims).await {
            for json in reply.map_err(unavailable)? {
                // Our own JSON always decodes; anything else is left to expire.
                match serde_json::from_str(&json) {
                    Ok(d) => claimed.push(d),
                    Err(e) => tracing::error!(error = %e, "undecodable webhook delivery skipped"),
                }
            }
        }
        Ok(claimed)
    }

    async fn webhook_settle(&self, delivery: &Delivery, outcome: Settle) -> Result<(), StoreError> {
        let json =
            || serde_json::to_string(delivery).map_err(|e| StoreError::Corrupt(e.to_string()));
        let id: Value = delivery.event_id.as_str().into();
        let args: Vec<Value> = match outcome {
            Settle::Delivered => vec!["done".into(), id],
            Settle::RetryAt(due) => vec!["schedule".into(), id, json()?.into(), due.into()],
            Settle::Dead => vec!["dead".into(), id, json()?.into()],
        };
        self.webhook_op(&self.pool.next(), delivery.session_id, args)
            .await
            .map(drop)
    }

    async fn webhook_dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let client = &self.pool.next();
        let reads = (0..self.options.buckets)
            .map(|b| client.hvals::<Vec<String>, _>(self.layout.webhook_dead(b)));
        let mut dead: Vec<Delivery> = Vec::new();
        for reply in join_all(reads).await {
            dead.extend(
                reply
                    .map_err(unavailable)?
                    .iter()
                    .filter_map(|json| serde_json::from_str(json).ok()),
            );
        }
        dead.sort_by_key(|d| (d.failed_ms, d.event_id.clone()));
        dead.truncate(limit);
        Ok(dead)
    }

    async fn webhook_revive(&self, event_id: &str, due_ms: i64) -> Result<bool, StoreError> {
        let client = &self.pool.next();
        let reads = (0..self.options.buckets)
            .map(|b| client.hget::<Option<String>, _, _>(self.layout.webhook_dead(b), event_id));
        let found = join_all(reads)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let Some(d) = found
            .into_iter()
            .flatten()
            .find_map(|json| serde_json::from_str::<Delivery>(&json).ok())
        else {
            return Ok(false);
        };
        let d = d.afresh();
        let json = serde_json::to_string(&d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let args: Vec<Value> = vec!["revive".into(), event_id.into(), json.into(), due_ms.into()];
        Ok(self.webhook_op(client, d.session_id, args).await? == 1)
    }

    async fn webhook_stats(&self) -> Result<WebhookStats, StoreError> {
        let client = &self.pool.next();
        let reads = (0..self.options.buckets).map(|b| async move {
            tokio::join!(
                client.zcard::<u64, _>(self.layout.webhook_due(b)),
                client.hlen::<u64, _>(self.layout.webhook_dead(b)),
            )
        });
        let mut stats = WebhookStats::default();
        for (scheduled, dead) in join_all(reads).await {
            stats.scheduled += scheduled.map_err(unavailable)?;
            stats.dead += dead.map_err(unavailable)?;
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.pool.next().ping(None).await.map_err(unavailable)?;
        let silent = self.probes.silent_ms();
        if silent > pubsub::PROBE_TIMEOUT_MS {
            return Err(StoreError::Unavailable(format!(
                "pub/sub probe not answered for {silent} ms"
            )));
        }
        Ok(())
    }

    async fn rate_settle(
        &self,
        batch: &[(u64, u64)],
        interval_us: i64,
    ) -> Result<Vec<i64>, StoreError> {
        // One script call per bucket (each its own slot); on standalone
        // Redis one for the whole batch. Per call: the batch positions, the
        // keys, and the arguments (the interval, then a count per key).
        let mut groups =
            std::collections::BTreeMap::<u16, (Vec<usize>, Vec<String>, Vec<Value>)>::new();
        for (i, &(key, admitted)) in batch.iter().enumerate() {
            let (b, name) = self.layout.rate_limit(key);
            let group = if self.options.cluster { b } else { 0 };
            let (indices, keys, args) = groups
                .entry(group)
                .or_insert_with(|| (Vec::new(), Vec::new(), vec![Value::Integer(interval_us)]));
            indices.push(i);
            keys.push(name);
            args.push(num(admitted));
        }
        let calls = groups
            .into_values()
            .map(|(indices, keys, args)| async move {
                let ahead: Vec<i64> =
                    run_script(&self.pool, &self.scripts.settle, keys, args).await?;
                Ok::<_, fred::error::Error>(indices.into_iter().zip(ahead))
            });
        let mut settled = vec![0; batch.len()];
        for group in join_all(calls).await {
            for (i, ahead) in group.map_err(unavailable)? {
                settled[i] = ahead;
            }
        }
        Ok(settled)
    }
}

impl RedisStore {
    /// The buckets one script call or command may cover together: all of
    /// them on standalone Redis, one (its own slot) per call on a Cluster.
    fn buckets_per_call(&self) -> Vec<Vec<u16>> {
        let all = 0..self.options.buckets;
        if self.options.cluster {
            all.map(|b| vec![b]).collect()
        } else {
            vec![all.collect()]
        }
    }

    /// Runs one `webhook.lua` operation on the schedule of `session`'s bucket.
    async fn webhook_op(
        &self,
        client: &Client,
        session: SessionId,
        args: Vec<Value>,
    ) -> Result<i64, StoreError> {
        let keys = self.layout.webhook_keys(self.layout.bucket(session));
        self.scripts
            .webhook
            .evalsha_with_reload::<i64, _, _>(client, keys, args)
            .await
            .map_err(unavailable)
    }

    /// A failed outbox read of bucket `b`: a missing group (Redis restarted
    /// empty, or the stream was deleted) is created for the next read; other
    /// errors mean Redis is unavailable.
    async fn on_outbox_error(
        &self,
        client: &Client,
        b: u16,
        group: OutboxGroup,
        e: fred::error::Error,
    ) -> Result<(), StoreError> {
        if e.details().starts_with("NOGROUP") {
            create_group(client, &self.layout, b, group)
                .await
                .map_err(unavailable)
        } else {
            Err(unavailable(e))
        }
    }

    /// The earliest deadline of every bucket, in bucket order. Standalone:
    /// one script call for all (the scheduler polls at least every 100 ms,
    /// so this is most of an idle instance's commands); Cluster: a plain
    /// read per bucket, each in its own slot.
    async fn earliest(&self, client: &Client) -> Result<Vec<Option<i64>>, StoreError> {
        let dues = (0..self.options.buckets).map(|b| self.layout.due(b));
        if !self.options.cluster {
            let firsts: Vec<String> = self
                .scripts
                .earliest
                .evalsha_with_reload(client, dues.collect::<Vec<_>>(), ())
                .await
                .map_err(unavailable)?;
            return Ok(firsts.iter().map(|s| parse_score(s)).collect());
        }
        let firsts = dues.map(|due| async move {
            let first: Vec<String> = client.zrange(due, 0, 0, None, false, None, true).await?;
            Ok::<_, fred::error::Error>(first.get(1).and_then(|s| parse_score(s)))
        });
        join_all(firsts)
            .await
            .into_iter()
            .map(|first| first.map_err(unavailable))
            .collect()
    }

    /// Runs `reindex.lua`: sets (or removes) `id`'s index entry if the
    /// session is still at `version`; with `lease = Some((now, lease_ms))` it
    /// leaves an entry alone that a lease in progress pushed forward. Returns
    /// whether the entry changed.
    async fn set_index(
        &self,
        id: SessionId,
        version: u64,
        deadline: Option<Timestamp>,
        lease: Option<(Timestamp, i64)>,
    ) -> Result<bool, StoreError> {
        let b = self.bucket(id);
        let (now, lease_ms) = lease.map_or((Value::from(""), Value::from("")), |(now, ms)| {
            (now.ms().into(), ms.into())
        });
        let args: Vec<Value> = vec![
            num(version),
            id.to_string().into(),
            deadline
                .map(|d| d.ms().to_string())
                .unwrap_or_default()
                .into(),
            now,
            lease_ms,
        ];
        let keys = vec![
            self.layout.state(b, id),
            self.layout.due(b),
            self.layout.hint_channel(b),
        ];
        let changed: i64 = run_script(&self.pool, &self.scripts.reindex, keys, args)
            .await
            .map_err(unavailable)?;
        Ok(changed == 1)
    }

    /// The sweep proper, while holding the lock. Each page of the SCAN is
    /// read in one pipelined batch (states and their index scores); only
    /// entries that look wrong go to the script, which checks again,
    /// atomically and at the time of the check: a write or a claim that
    /// landed after our read is not a repair.
    async fn sweep_buckets(
        &self,
        client: &Client,
        now: Timestamp,
        lease_ms: i64,
    ) -> Result<Swept, StoreError> {
        let started = std::time::Instant::now();
        let now_at_check = || now.plus(i64::try_from(started.elapsed().as_millis()).unwrap_or(0));
        let mut repairs = 0;
        let mut counted = 0;
        let mut live = HashSet::new();
        // On a Cluster every primary is scanned: a key moved by a reshard
        // meanwhile may be missed, which only defers its check to the next
        // sweep (orphans below are re-checked by the script itself).
        const STATES: &str = "sk:{*}:s:*";
        let mut pages: Pin<Box<dyn Stream<Item = Result<ScanResult, fred::error::Error>> + Send>> =
            if self.options.cluster {
                Box::pin(client.scan_cluster(STATES, Some(500), None))
            } else {
                Box::pin(client.scan(STATES, Some(500), None))
            };
        while let Some(page) = pages.next().await {
            let mut page = page.map_err(unavailable)?;
            let ids: Vec<SessionId> = page
                .take_results()
                .unwrap_or_default()
                .iter()
                .filter_map(|key| key.as_str()?.rsplit(':').next().and_then(SessionId::parse))
                .collect();
            page.next(); // fetches the next page while this one is checked
            live.extend(ids.iter().copied());
            let sessions = join_all(ids.iter().map(|&id| self.get(id)));
            let scores = join_all(ids.iter().map(|&id| {
                client.zscore::<Option<f64>, _, _>(self.layout.due(self.bucket(id)), id.to_string())
            }));
            let (sessions, scores) = tokio::join!(sessions, scores);
            for ((id, session), indexed) in ids.iter().zip(sessions).zip(scores) {
                let Some(session) = session? else {
                    continue; // deleted or expired since the SCAN
                };
                counted += 1;
                let expected = crate::domain::deadline(&session);
                let indexed = indexed.map_err(unavailable)?.map(|at| at as i64);
                if index_needs_repair(expected, indexed, now_at_check(), lease_ms)
                    && self
                        .set_index(
                            *id,
                            session.version,
                            expected,
                            Some((now_at_check(), lease_ms)),
                        )
                        .await?
                {
                    repairs += 1;
                }
            }
        }
        // Entries whose session is gone (expired by TTL, say). A session
        // created during the SCAN may be missing from `live`: the script
        // checks existence itself and leaves it alone.
        for b in 0..self.options.buckets {
            let members: Vec<String> = client
                .zrange(self.layout.due(b), 0, -1, None, false, None, false)
                .await
                .map_err(unavailable)?;
            let orphans = members
                .iter()
                .filter_map(|m| SessionId::parse(m))
                .filter(|id| !live.contains(id));
            for id in orphans {
                if self.set_index(id, 0, None, None).await? {
                    repairs += 1;
                }
            }
        }
        Ok(Swept {
            repairs,
            sessions: Some(counted),
        })
    }
}

/// Creates a consumer group on a bucket's outbox stream (and the stream),
/// from its first entry; one that exists already is left alone.
async fn create_group(
    client: &Client,
    layout: &Layout,
    b: u16,
    group: OutboxGroup,
) -> Result<(), fred::error::Error> {
    match client
        .xgroup_create::<Value, _, _, _>(layout.audit(b), group.name(), "0", true)
        .await
    {
        Err(e) if !e.details().starts_with("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// The elements of an array reply (nothing for nil, one for a scalar).
fn values(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Stream entries `[[id, [field, value, …]], …]` of bucket `b` as outbox
/// entries: the event is the `e` field, its snapshot (if any) the `s` field.
fn stream_entries(b: u16, list: Value) -> Vec<OutboxEntry> {
    values(list)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = values(entry).into_iter();
            let id = parts.next()?.as_string()?;
            let fields = values(parts.next()?);
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0].as_str().as_deref() == Some(name))
                    .and_then(|kv| kv.get(1)?.as_string())
            };
            let event = field("e")
                .ok_or_else(|| "no `e` field".to_owned())
                .and_then(|json| {
                    let mut event: AuditEvent =
                        serde_json::from_str(&json).map_err(|e| e.to_string())?;
                    if let Some(snapshot) = field("s") {
                        let snapshot = StateJson::from_json(snapshot).map_err(|e| e.to_string())?;
                        event.state_snapshot = Some(snapshot);
                    }
                    Ok(event)
                });
            Some(OutboxEntry {
                receipt: Receipt { bucket: b, id },
                event,
            })
        })
        .collect()
}

/// A sorted-set score (epoch ms) as Redis formats it.
fn parse_score(s: &str) -> Option<i64> {
    s.parse::<f64>().ok().map(|f| f as i64)
}

/// Every Redis failure the caller can act on looks the same: the store is
/// unavailable for now (timeouts, refused connections, failover).
fn unavailable(e: fred::error::Error) -> StoreError {
    let kind = match e.kind() {
        fred::error::ErrorKind::Timeout => "timeout",
        _ => "error",
    };
    metrics::counter!("synckairos_redis_errors_total", "kind" => kind).increment(1);
    StoreError::Unavailable(e.to_string())
}

/// Versions as script arguments (they never approach `i64::MAX`).
fn num(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn encode_event(event: &AuditEvent) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Runs a script of the request path by SHA (loading it where it is
/// missing), again on another client if the call was lost with its client
/// ([`Connections::run`]). While a Cluster slot migrates, a script whose keys
/// are split between the two nodes is refused with TRYAGAIN before it runs,
/// so retrying it is safe; the migration of one slot's keys takes
/// milliseconds.
async fn run_script<R: fred::types::FromValue>(
    pool: &Connections,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<R, fred::error::Error> {
    let run = || {
        pool.run(|client| {
            let (keys, args) = (keys.clone(), args.clone());
            async move { script.evalsha_with_reload(&client, keys, args).await }
        })
    };
    let mut delay = Duration::from_millis(5);
    for _ in 0..TRYAGAIN_ATTEMPTS {
        match run().await {
            Err(e) if e.details().starts_with("TRYAGAIN") => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            result => return result,
        }
    }
    run().await
}

/// Tries of a script refused with TRYAGAIN before the last (5 + 10 + … ms).
const TRYAGAIN_ATTEMPTS: u32 = 5;

/// What a read over several buckets returns when some failed: the entries
/// of the others all the same (Redis has already recorded them as delivered
/// to this consumer, so dropping them would strand them until reclaimed as
/// idle), and the error only when nothing was read.
fn read_or_failed(
    entries: Vec<OutboxEntry>,
    failed: Option<StoreError>,
) -> Result<Vec<OutboxEntry>, StoreError> {
    match failed {
        Some(e) if entries.is_empty() => Err(e),
        Some(e) => {
            tracing::warn!(error = %e, read = entries.len(), "some audit outbox streams could not be read");
            Ok(entries)
        }
        None => Ok(entries),
    }
}

/// `REDIS_CLUSTER=true` turns a plain URL into fred's cluster scheme.
fn cluster_url(url: &str, cluster: bool) -> String {
    if !cluster || url.contains("-cluster://") {
        return url.to_owned();
    }
    url.replacen("rediss://", "rediss-cluster://", 1)
        .replacen("redis://", "redis-cluster://", 1)
}

/// Records `BUCKETS` and the key layout on first start and refuses a
/// different value later: either change would move every session to other
/// keys. One script, so instances starting together agree.
async fn check_layout(pool: &Connections, buckets: u16) -> Result<(), ConnectError> {
    const CHECK: &str = r"
        if redis.call('HEXISTS', KEYS[1], 'buckets') == 1
            and redis.call('HEXISTS', KEYS[1], 'layout') == 0 then
            return {redis.call('HGET', KEYS[1], 'buckets'), 'unversioned'}
        end
        redis.call('HSETNX', KEYS[1], 'buckets', ARGV[1])
        redis.call('HSETNX', KEYS[1], 'layout', ARGV[2])
        return {redis.call('HGET', KEYS[1], 'buckets'), redis.call('HGET', KEYS[1], 'layout')}";
    let (stored_buckets, stored_layout): (String, String) = pool
        .next()
        .eval(
            CHECK,
            keys::META,
            vec![buckets.to_string(), keys::LAYOUT_VERSION.to_owned()],
        )
        .await
        .map_err(|e| ConnectError::Connect(e.to_string()))?;
    if stored_layout != keys::LAYOUT_VERSION {
        return Err(ConnectError::LayoutMismatch {
            stored: stored_layout,
        });
    }
    if stored_buckets != buckets.to_string() {
        return Err(ConnectError::BucketMismatch {
            configured: buckets,
            stored: stored_buckets,
        });
    }
    Ok(())
}
