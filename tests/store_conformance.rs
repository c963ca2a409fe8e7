//! The store contract, checked against every backend. Each backend gets the
//! same scenarios through `conformance!`; the Redis backend joins with one line.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use synckairos::audit::AuditEvent;
use synckairos::clock::Clock;
use synckairos::domain::{Command, NewSession, Session, SessionId, Timestamp, deadline, decide};
use synckairos::store::OutboxGroup::{self, Audit, Webhooks};
use synckairos::store::memory::MemoryStore;
use synckairos::store::redis::{RedisOptions, RedisStore};
use synckairos::store::{
    Delivery, FeedEvent, OutboxStats, Settle, StateJson, Store, StoreError, Swept, WebhookStats,
    Write, WriteLimit,
};

use common::cluster::RedisCluster;
use common::redis::RedisServer;
use common::{T0, session_body};

/// A fresh pending session (version 1).
fn session() -> Session {
    NewSession::parse(&session_body("per_participant", 2, 10_000))
        .unwrap()
        .into_created(T0)
        .session
}

/// The session's next version after `cmd` at `at`.
fn next(s: &Session, cmd: Command, at: Timestamp) -> Session {
    decide(s, &cmd, at).write.unwrap().session
}

fn write<'a>(s: &'a Session, expected: u64, message: &'a Bytes) -> Write<'a> {
    Write {
        session: s,
        state: StateJson::of(s),
        expected_version: expected,
        deadline: deadline(s),
        now: T0,
        refresh_ttl: true,
        events: &[],
        message,
        limit: None,
    }
}

fn msg(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

/// Waits for the next feed message (fails after 5 s).
async fn next_message(
    feed: &mut tokio::sync::broadcast::Receiver<FeedEvent>,
) -> (SessionId, Bytes) {
    match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
        Ok(Ok(FeedEvent::Message {
            session_id,
            payload,
        })) => (session_id, payload),
        other => panic!("expected a message, got {other:?}"),
    }
}

pub async fn create_is_exclusive_and_get_round_trips(store: Arc<dyn Store>) {
    let s = session();
    let m = msg("created");
    store.create(write(&s, 0, &m)).await.unwrap();
    assert_eq!(store.get(s.session_id).await.unwrap(), Some(s.clone()));
    let other = Session {
        created_at: T0.plus(1),
        ..s.clone()
    };
    assert_eq!(
        store.create(write(&other, 0, &m)).await,
        Err(StoreError::AlreadyExists)
    );
    assert_eq!(store.get(session().session_id).await.unwrap(), None);
}

/// Two writers that computed the very same next state from the same
/// version: one wins, the other is told it lost (a store that recognises a
/// retry of its own write must not mistake the other writer's for it).
pub async fn identical_writes_of_two_writers_are_one_success_and_one_conflict(
    store: Arc<dyn Store>,
) {
    let s1 = session();
    let m = msg("x");
    store.create(write(&s1, 0, &m)).await.unwrap();
    assert_eq!(
        store.create(write(&s1, 0, &m)).await,
        Err(StoreError::AlreadyExists)
    );
    let s2 = next(&s1, Command::Start, T0);
    store.compare_and_set(write(&s2, 1, &m)).await.unwrap();
    assert_eq!(
        store.compare_and_set(write(&s2, 1, &m)).await,
        Err(StoreError::Conflict { actual: Some(2) })
    );
}

pub async fn compare_and_set_checks_the_version(store: Arc<dyn Store>) {
    let s1 = session();
    let m = msg("x");
    store.create(write(&s1, 0, &m)).await.unwrap();
    let s2 = next(&s1, Command::Start, T0);
    store.compare_and_set(write(&s2, 1, &m)).await.unwrap();
    // A second writer that also read version 1 loses.
    let other = next(&s1, Command::Complete, T0);
    assert_eq!(
        store.compare_and_set(write(&other, 1, &m)).await,
        Err(StoreError::Conflict { actual: Some(2) })
    );
    assert_eq!(store.get(s1.session_id).await.unwrap().unwrap(), s2);
    // A session that does not exist conflicts with no version.
    let ghost = next(&session(), Command::Start, T0);
    assert_eq!(
        store.compare_and_set(write(&ghost, 1, &m)).await,
        Err(StoreError::Conflict { actual: None })
    );
}

pub async fn delete_is_versioned_and_removes_everything(store: Arc<dyn Store>) {
    let s1 = session();
    let m = msg("x");
    store.create(write(&s1, 0, &m)).await.unwrap();
    let s2 = next(&s1, Command::Start, T0);
    store.compare_and_set(write(&s2, 1, &m)).await.unwrap();
    let event = AuditEvent::deleted(&s2, T0);
    assert_eq!(
        store.delete(s1.session_id, 1, &event, &m).await,
        Err(StoreError::Conflict { actual: Some(2) })
    );
    store.delete(s1.session_id, 2, &event, &m).await.unwrap();
    assert_eq!(store.get(s1.session_id).await.unwrap(), None);
    // Its deadline went with it.
    let far = T0.plus(1_000_000);
    assert!(store.claim_due(far, 5_000, 100).await.unwrap().is_empty());
    assert_eq!(
        store.delete(s1.session_id, 2, &event, &m).await,
        Err(StoreError::Conflict { actual: None })
    );
}

/// The audit events of a create and a start, stamped as the engine does.
fn audited_writes() -> (Session, Session, Vec<AuditEvent>, Vec<AuditEvent>) {
    let t = NewSession::parse(&session_body("per_participant", 2, 10_000))
        .unwrap()
        .into_created(T0);
    let created: Vec<AuditEvent> = t
        .events
        .iter()
        .map(|e| AuditEvent::stamp(e, &t.session, Some(StateJson::of(&t.session))))
        .collect();
    let started = decide(&t.session, &Command::Start, T0).write.unwrap();
    let start: Vec<AuditEvent> = started
        .events
        .iter()
        .map(|e| AuditEvent::stamp(e, &started.session, Some(StateJson::of(&started.session))))
        .collect();
    (t.session, started.session, created, start)
}

pub async fn outbox_events_stay_until_acknowledged(store: Arc<dyn Store>) {
    let (s1, s2, created, start) = audited_writes();
    let m = msg("x");
    store
        .create(Write {
            events: &created,
            ..write(&s1, 0, &m)
        })
        .await
        .unwrap();
    store
        .compare_and_set(Write {
            events: &start,
            ..write(&s2, 1, &m)
        })
        .await
        .unwrap();
    let all: Vec<AuditEvent> = created.iter().chain(&start).cloned().collect();
    let stats = store.outbox_stats(Audit).await.unwrap();
    assert_eq!((stats.backlog, stats.pending), (all.len() as u64, 0));
    assert!(stats.oldest.is_some());

    // One consumer reads them, in write order; nothing is left for another.
    let read = store.outbox_read(Audit, "a", 100).await.unwrap();
    let events: Vec<AuditEvent> = read.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(events, all);
    assert!(store.outbox_read(Audit, "b", 100).await.unwrap().is_empty());
    assert_eq!(
        store.outbox_stats(Audit).await.unwrap().pending,
        all.len() as u64
    );

    // Unacknowledged, they can be claimed once idle long enough.
    assert!(
        store
            .outbox_reclaim(Audit, "b", 3_600_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store.outbox_reclaim(Audit, "b", 0, 100).await.unwrap();
    let mut claimed: Vec<_> = claimed.into_iter().map(|e| e.receipt).collect();
    let mut receipts: Vec<_> = read.iter().map(|e| e.receipt.clone()).collect();
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    receipts.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(claimed, receipts);

    // Acknowledged by the audit drain, they wait for the webhooks, which
    // read every one of them too.
    store.outbox_ack(Audit, &receipts).await.unwrap();
    assert!(
        store
            .outbox_reclaim(Audit, "b", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.outbox_read(Audit, "a", 100).await.unwrap().is_empty());
    assert_eq!(store.outbox_stats(Audit).await.unwrap().pending, 0);
    assert_eq!(
        store.outbox_stats(Webhooks).await.unwrap().backlog,
        all.len() as u64
    );
    let hooks = store.outbox_read(Webhooks, "w", 100).await.unwrap();
    let events: Vec<AuditEvent> = hooks.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(events, all);
    let receipts: Vec<_> = hooks.iter().map(|e| e.receipt.clone()).collect();

    // Acknowledged by both, they are gone for good.
    store.outbox_ack(Webhooks, &receipts[..1]).await.unwrap();
    assert_eq!(
        store.outbox_stats(Webhooks).await.unwrap().backlog,
        all.len() as u64 - 1
    );
    store.outbox_ack(Webhooks, &receipts).await.unwrap();
    assert_eq!(
        store.outbox_stats(Webhooks).await.unwrap(),
        OutboxStats::default()
    );
    assert_eq!(
        store.outbox_stats(Audit).await.unwrap(),
        OutboxStats::default()
    );
}

/// A delivery for `session`, as the deliverer would make it.
fn delivery(id: &str, session: SessionId) -> Delivery {
    Delivery {
        event_id: id.to_owned(),
        session_id: session,
        kind: "session.timeout".into(),
        url: "http://127.0.0.1:9/hooks".into(),
        body: r#"{"type":"session.timeout"}"#.into(),
        attempts: 0,
        event_ms: T0.ms(),
        last_error: None,
        failed_ms: None,
    }
}

pub async fn webhook_deliveries_are_leased_retried_and_dead_lettered(store: Arc<dyn Store>) {
    let a = session().session_id;
    let b = SessionId(uuid::Uuid::new_v4());
    let t = T0.ms();
    store
        .webhook_schedule(&[(delivery("e1", a), t), (delivery("e2", b), t + 5_000)])
        .await
        .unwrap();
    assert_eq!(store.webhook_stats().await.unwrap().scheduled, 2);

    // Due ones are leased to one claimer until the lease ends.
    let claimed = store.webhook_claim(t, t + 30_000, 10).await.unwrap();
    assert_eq!(claimed, [delivery("e1", a)]);
    let second = store
        .webhook_claim(t + 5_000, t + 35_000, 10)
        .await
        .unwrap();
    assert_eq!(second, [delivery("e2", b)], "e1 is leased");
    store
        .webhook_settle(&second[0], Settle::Delivered)
        .await
        .unwrap();
    let lapsed = store
        .webhook_claim(t + 30_000, t + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(
        lapsed
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e1"]
    );

    // A failed attempt is due again at its retry, with what went wrong.
    let mut failed = delivery("e1", a);
    failed.attempts = 1;
    failed.last_error = Some("HTTP 500".into());
    store
        .webhook_settle(&failed, Settle::RetryAt(t + 70_000))
        .await
        .unwrap();
    assert!(
        store
            .webhook_claim(t + 69_999, t + 99_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .webhook_claim(t + 70_000, t + 99_000, 10)
            .await
            .unwrap(),
        [failed.clone()]
    );

    // The last failure dead-letters it; a retry puts it back, afresh.
    failed.attempts = 8;
    failed.failed_ms = Some(t + 80_000);
    store.webhook_settle(&failed, Settle::Dead).await.unwrap();
    assert_eq!(
        store.webhook_dead_letters(10).await.unwrap(),
        [failed.clone()]
    );
    assert_eq!(
        store.webhook_stats().await.unwrap(),
        WebhookStats {
            scheduled: 0,
            dead: 1
        }
    );
    assert!(
        store
            .webhook_claim(t + 200_000, t + 230_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "dead letters are not delivered"
    );
    assert!(!store.webhook_revive("nope", t).await.unwrap());
    assert!(store.webhook_revive("e1", t + 200_000).await.unwrap());
    assert!(
        !store.webhook_revive("e1", t + 200_000).await.unwrap(),
        "revived once"
    );
    assert!(store.webhook_dead_letters(10).await.unwrap().is_empty());
    let revived = store
        .webhook_claim(t + 200_000, t + 230_000, 10)
        .await
        .unwrap();
    assert_eq!(revived, [delivery("e1", a)], "attempts counted afresh");

    // Delivered, it is forgotten.
    store
        .webhook_settle(&revived[0], Settle::Delivered)
        .await
        .unwrap();
    assert_eq!(
        store.webhook_stats().await.unwrap(),
        WebhookStats::default()
    );
}

pub async fn due_entries_are_leased_to_one_claimer(store: Arc<dyn Store>) {
    let s1 = session();
    let m = msg("x");
    store.create(write(&s1, 0, &m)).await.unwrap();
    let running = next(&s1, Command::Start, T0); // deadline T0 + 10 s
    store.compare_and_set(write(&running, 1, &m)).await.unwrap();
    let due = T0.plus(10_000);

    assert!(
        store
            .claim_due(due.plus(-1), 5_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim_due(due, 5_000, 100).await.unwrap(),
        [s1.session_id]
    );
    // Leased: nobody else gets it until the lease runs out...
    assert!(
        store
            .claim_due(due.plus(4_999), 5_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // ...and then it comes back, as if the claimer had died.
    assert_eq!(
        store.claim_due(due.plus(5_000), 5_000, 100).await.unwrap(),
        [s1.session_id]
    );

    // A write replaces the lease with the real deadline (or none).
    let paused = next(&running, Command::Pause, T0.plus(1_000));
    store.compare_and_set(write(&paused, 2, &m)).await.unwrap();
    assert!(
        store
            .claim_due(T0.plus(1_000_000), 5_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn claims_respect_the_limit(store: Arc<dyn Store>) {
    // The limit is per bucket: use five sessions of one Redis bucket (the
    // embedded store has a single index anyway).
    let m = msg("x");
    let same_bucket = std::iter::repeat_with(session)
        .filter(|s| synckairos::store::redis::keys::bucket(s.session_id, 16) == 0)
        .take(5);
    for s in same_bucket {
        store.create(write(&s, 0, &m)).await.unwrap();
        let r = next(&s, Command::Start, T0);
        store.compare_and_set(write(&r, 1, &m)).await.unwrap();
    }
    let later = T0.plus(60_000);
    assert_eq!(store.claim_due(later, 5_000, 3).await.unwrap().len(), 3);
    assert_eq!(store.claim_due(later, 5_000, 3).await.unwrap().len(), 2);
}

pub async fn reindex_only_touches_the_version_it_read(store: Arc<dyn Store>) {
    let s1 = session();
    let m = msg("x");
    store.create(write(&s1, 0, &m)).await.unwrap();
    let running = next(&s1, Command::Start, T0);
    store.compare_and_set(write(&running, 1, &m)).await.unwrap();
    let id = s1.session_id;

    // A stale version changes nothing.
    store.reindex(id, 1, Some(T0.plus(1))).await.unwrap();
    assert!(
        store
            .claim_due(T0.plus(9_999), 5_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The current version moves the entry.
    store.reindex(id, 2, Some(T0.plus(1))).await.unwrap();
    assert_eq!(store.claim_due(T0.plus(1), 5_000, 10).await.unwrap(), [id]);
    // An unknown session's entry is removed.
    let ghost = session().session_id;
    store.reindex(ghost, 0, None).await.unwrap();
    assert_eq!(store.get(ghost).await.unwrap(), None);
}

pub async fn subscribers_get_exactly_their_sessions_messages(store: Arc<dyn Store>) {
    let (a, b) = (session(), session());
    let mut feed = store.feed();
    store.subscribe(a.session_id).await.unwrap();
    // Watching a session that does not exist yet sees its creation.
    store.create(write(&a, 0, &msg("a1"))).await.unwrap();
    store.create(write(&b, 0, &msg("b1"))).await.unwrap();
    let a2 = next(&a, Command::Start, T0);
    store
        .compare_and_set(write(&a2, 1, &msg("a2")))
        .await
        .unwrap();
    assert_eq!(next_message(&mut feed).await, (a.session_id, msg("a1")));
    assert_eq!(next_message(&mut feed).await, (a.session_id, msg("a2")));

    store.unsubscribe(a.session_id).await.unwrap();
    store.subscribe(b.session_id).await.unwrap();
    let a3 = next(&a2, Command::Pause, T0);
    store
        .compare_and_set(write(&a3, 2, &msg("a3")))
        .await
        .unwrap();
    let event = AuditEvent::deleted(&b, T0);
    store
        .delete(b.session_id, 1, &event, &msg("b-deleted"))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut feed).await,
        (b.session_id, msg("b-deleted"))
    );
}

pub async fn the_sweep_repairs_the_index_and_respects_leases(store: Arc<dyn Store>) {
    let s1 = session();
    let m = msg("x");
    store.create(write(&s1, 0, &m)).await.unwrap();
    let running = next(&s1, Command::Start, T0); // deadline T0 + 10 s
    store.compare_and_set(write(&running, 1, &m)).await.unwrap();
    let id = s1.session_id;
    assert_eq!(
        store.sweep(T0, 5_000).await.unwrap(),
        Swept {
            repairs: 0,
            sessions: Some(1)
        },
        "nothing to repair, one session counted"
    );

    // An entry lost: the sweep puts it back and the timeout can be claimed.
    store.reindex(id, 2, None).await.unwrap();
    assert_eq!(store.sweep(T0, 5_000).await.unwrap().repairs, 1);
    assert_eq!(
        store.claim_due(T0.plus(10_000), 5_000, 10).await.unwrap(),
        [id]
    );
    // That claim's lease is left alone...
    assert_eq!(
        store.sweep(T0.plus(10_000), 5_000).await.unwrap().repairs,
        0
    );
    // ...but an entry far from the deadline is stale and is reset.
    store
        .reindex(id, 2, Some(T0.plus(3_600_000)))
        .await
        .unwrap();
    assert_eq!(
        store.sweep(T0.plus(10_000), 5_000).await.unwrap().repairs,
        1
    );
    assert_eq!(
        store.claim_due(T0.plus(10_000), 5_000, 10).await.unwrap(),
        [id]
    );
}

pub async fn a_spent_write_limit_refuses_and_writes_nothing(store: Arc<dyn Store>) {
    let m = msg("x");
    // Two at once, then one an hour: the third write is refused.
    let limit = Some(WriteLimit {
        interval_us: 3_600_000_000,
        burst: 2,
    });
    let s1 = session();
    store.create(write(&s1, 0, &m)).await.unwrap();
    let s2 = next(&s1, Command::Start, T0);
    let s3 = next(&s2, Command::Pause, T0);
    let s4 = next(&s3, Command::Resume, T0);
    for (s, expected) in [(&s2, 1), (&s3, 2)] {
        store
            .compare_and_set(Write {
                limit,
                ..write(s, expected, &m)
            })
            .await
            .unwrap();
    }
    let limited = store
        .compare_and_set(Write {
            limit,
            ..write(&s4, 3, &m)
        })
        .await;
    let Err(StoreError::RateLimited(decision)) = limited else {
        panic!("expected the limit to refuse, got {limited:?}");
    };
    assert!(!decision.allowed);
    assert!(decision.retry_after_us > 3_000_000_000, "{decision:?}");
    assert_eq!(store.get(s1.session_id).await.unwrap().unwrap(), s3);
    // The version is checked first: a stale write is a conflict, not a 429.
    assert_eq!(
        store
            .compare_and_set(Write {
                limit,
                ..write(&s4, 2, &m)
            })
            .await,
        Err(StoreError::Conflict { actual: Some(3) })
    );
    // Writes the limit does not apply to still go through.
    store.compare_and_set(write(&s4, 3, &m)).await.unwrap();
    // Each session has its own limit.
    let other = session();
    store.create(write(&other, 0, &m)).await.unwrap();
    store
        .compare_and_set(Write {
            limit,
            ..write(&next(&other, Command::Start, T0), 1, &m)
        })
        .await
        .unwrap();
}

pub async fn rate_settles_add_up_across_instances(store: Arc<dyn Store>) {
    let second = 1_000_000;
    // Clients by the hash of their key.
    let (a, b, c) = (0x0a, 0x0b, 0x0c);
    let settle = |batch: &[(u64, u64)]| {
        let batch = batch.to_vec();
        let store = store.clone();
        async move { store.rate_settle(&batch, second).await.unwrap() }
    };
    assert!(settle(&[(a, 0)]).await[0] <= 0);
    // Two instances settle 30 and 20 requests of one client: 50 s owed;
    // each call settles many clients at once.
    let first = settle(&[(a, 30), (b, 5), (c, 0)]).await;
    assert_eq!(first.len(), 3);
    assert!(first[0] > 0 && first[0] <= 30 * second, "{first:?}");
    assert!(first[1] > 0 && first[1] <= 5 * second, "{first:?}");
    assert!(first[2] <= 0, "{first:?}");
    let both = settle(&[(a, 20)]).await[0];
    assert!(both > 45 * second && both <= 50 * second, "{both}");
    // A read adds nothing; a client never seen owes nothing.
    let read = settle(&[(c, 0), (a, 0)]).await;
    assert!(
        read[0] <= 0 && read[1] > 45 * second && read[1] <= both,
        "{read:?}"
    );
    assert!(settle(&[]).await.is_empty());
}

pub async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

/// Generates one test per scenario for a backend built by `$make`.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $make;
                create_is_exclusive_and_get_round_trips,
                identical_writes_of_two_writers_are_one_success_and_one_conflict,
                compare_and_set_checks_the_version,
                delete_is_versioned_and_removes_everything,
                outbox_events_stay_until_acknowledged,
                webhook_deliveries_are_leased_retried_and_dead_lettered,
                due_entries_are_leased_to_one_claimer,
                claims_respect_the_limit,
                reindex_only_touches_the_version_it_read,
                subscribers_get_exactly_their_sessions_messages,
                the_sweep_repairs_the_index_and_respects_leases,
                a_spent_write_limit_refuses_and_writes_nothing,
                rate_settles_add_up_across_instances,
                ping_answers);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                // `_backing` (e.g. a redis-server) lives until the test ends.
                let (store, _backing) = $make().await;
                super::$name(store).await;
            }
        )*
    };
}

/// Every store here has both outbox consumers: the audit drain and the webhooks.
async fn memory_store() -> (Arc<dyn Store>, ()) {
    let store = MemoryStore::new(Clock::manual(T0).0, 3600).with_outbox(&OutboxGroup::ALL);
    (Arc::new(store), ())
}

/// A Redis store on its own fresh `redis-server`.
async fn redis_store() -> (Arc<dyn Store>, RedisServer) {
    let server = RedisServer::start();
    let options = RedisOptions {
        outbox: OutboxGroup::ALL.to_vec(),
        ..server.store_options()
    };
    let store = RedisStore::connect(options).await.unwrap();
    (Arc::new(store), server)
}

/// A Redis store on its own fresh Redis Cluster (3 primaries, 3 replicas).
async fn cluster_store() -> (Arc<dyn Store>, RedisCluster) {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap();
    let options = RedisOptions {
        outbox: OutboxGroup::ALL.to_vec(),
        ..cluster.store_options()
    };
    let store = RedisStore::connect(options).await.unwrap();
    (Arc::new(store), cluster)
}

conformance!(memory, memory_store);
conformance!(redis, redis_store);
conformance!(redis_cluster, cluster_store);

// ------------------------------------------------------- embedded-only checks

#[tokio::test]
async fn memory_ttl_counts_from_the_last_client_write_or_the_deadline() {
    let (clock, time) = Clock::manual(T0);
    let store = MemoryStore::new(clock, 60);
    let s = session(); // 10 s banks
    let m = msg("x");
    store.create(write(&s, 0, &m)).await.unwrap();
    time.advance(59_000);
    let paused = next(
        &next(&s, Command::Start, time.now()),
        Command::Pause,
        time.now(),
    );
    let w = Write {
        now: time.now(),
        ..write(&paused, 1, &m)
    };
    store.compare_and_set(w).await.unwrap(); // restarts the TTL
    time.advance(59_000);
    assert!(store.get(s.session_id).await.unwrap().is_some());
    time.advance(1_000);
    assert_eq!(store.get(s.session_id).await.unwrap(), None);
    // Its deadline entry is gone too, and the id can be reused.
    let later = time.now().plus(1_000_000);
    assert!(store.claim_due(later, 5_000, 10).await.unwrap().is_empty());
    store.create(write(&s, 0, &m)).await.unwrap();

    // A running session lives at least until its deadline plus the TTL,
    // however long its bank.
    let (clock, time) = Clock::manual(T0);
    let store = MemoryStore::new(clock, 60);
    let long = NewSession::parse(&session_body("global", 2, 10_000))
        .unwrap()
        .into_created(T0)
        .session;
    store.create(write(&long, 0, &m)).await.unwrap();
    let running = next(&long, Command::Start, T0); // global: 600 s session clock
    store.compare_and_set(write(&running, 1, &m)).await.unwrap();
    time.advance(600_000 + 59_000);
    assert!(store.get(long.session_id).await.unwrap().is_some());

    // A write that keeps the TTL (a server-applied timeout) does not extend it.
    let expired = next(&running, Command::Timeout, time.now());
    let w = Write {
        now: time.now(),
        refresh_ttl: false,
        ..write(&expired, 2, &m)
    };
    store.compare_and_set(w).await.unwrap();
    time.advance(1_000);
    assert_eq!(store.get(long.session_id).await.unwrap(), None);
}

#[tokio::test]
async fn the_embedded_scheduler_wakes_at_the_earliest_deadline() {
    let (clock, time) = Clock::manual(T0);
    let store = Arc::new(MemoryStore::new(clock.clone(), 3600));
    let waiter = {
        let store = store.clone();
        let clock = clock.clone();
        tokio::spawn(async move { store.wait_for_due(&clock).await })
    };
    let s = session();
    let m = msg("x");
    store.create(write(&s, 0, &m)).await.unwrap();
    let running = next(&s, Command::Start, T0);
    store.compare_and_set(write(&running, 1, &m)).await.unwrap();
    // The waiter was woken by the new index entry (not by time passing).
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();

    let waiter = {
        let store = store.clone();
        let clock = clock.clone();
        tokio::spawn(async move { store.wait_for_due(&clock).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    time.advance(10_000); // the deadline
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
}
