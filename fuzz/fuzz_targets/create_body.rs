//! Any bytes as a create body: parsing and validation either accept it or
//! return field errors, never panic; an accepted body yields a session whose
//! wire view serialises and whose clocks are within the limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synckairos::domain::{NewSession, Timestamp, view};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(new) = NewSession::parse(&body) else {
        return;
    };
    let now = Timestamp(1_700_000_000_000);
    let created = new.into_created(now).session;
    assert_eq!(created.version, 1);
    assert!(!created.participants.is_empty() && created.participants.len() <= 1000);
    let v = view(&created, now);
    assert!(v.participants.iter().all(|p| p.time_remaining_ms >= 0));
    serde_json::to_vec(&v).expect("a view always serialises");
});
