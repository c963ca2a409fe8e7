//! The webhook event catalogue and payloads: one webhook per audit event of
//! a selected type, its body fixed by the event alone (so every retry sends
//! the same bytes).

use serde::Serialize;
use serde_json::value::RawValue;

use crate::audit::AuditEvent;
use crate::domain::{self, ActionOnTimeout, EventKind, ParticipantId, Session, SessionId};

/// The webhook types, one per audit event kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookType {
    Created,
    Started,
    Switched,
    Paused,
    Resumed,
    Timeout,
    Expired,
    Completed,
    Deleted,
}

impl WebhookType {
    pub const ALL: [WebhookType; 9] = [
        WebhookType::Created,
        WebhookType::Started,
        WebhookType::Switched,
        WebhookType::Paused,
        WebhookType::Resumed,
        WebhookType::Timeout,
        WebhookType::Expired,
        WebhookType::Completed,
        WebhookType::Deleted,
    ];

    /// The wire name (`type` of the body).
    pub fn name(self) -> &'static str {
        match self {
            WebhookType::Created => "session.created",
            WebhookType::Started => "session.started",
            WebhookType::Switched => "session.switched",
            WebhookType::Paused => "session.paused",
            WebhookType::Resumed => "session.resumed",
            WebhookType::Timeout => "session.timeout",
            WebhookType::Expired => "session.expired",
            WebhookType::Completed => "session.completed",
            WebhookType::Deleted => "session.deleted",
        }
    }

    /// The webhook an audit event makes.
    pub fn of(kind: EventKind) -> Self {
        match kind {
            EventKind::SessionCreated => WebhookType::Created,
            EventKind::SessionStarted => WebhookType::Started,
            EventKind::CycleSwitched => WebhookType::Switched,
            EventKind::SessionPaused => WebhookType::Paused,
            EventKind::SessionResumed => WebhookType::Resumed,
            EventKind::ParticipantExpired => WebhookType::Timeout,
            EventKind::SessionExpired => WebhookType::Expired,
            EventKind::SessionCompleted => WebhookType::Completed,
            EventKind::SessionDeleted => WebhookType::Deleted,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// `WEBHOOK_EVENTS`: the types delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSet(u16);

impl EventSet {
    /// A comma list of names, or `*` for all.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = 0;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Ok(Self(u16::MAX));
            }
            let t = WebhookType::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = WebhookType::ALL.iter().map(|t| t.name()).collect();
                    format!(
                        "WEBHOOK_EVENTS: unknown event {name:?} (known: {}, or *)",
                        names.join(", ")
                    )
                })?;
            set |= t.bit();
        }
        Ok(Self(set))
    }

    pub fn contains(self, t: WebhookType) -> bool {
        self.0 & t.bit() != 0
    }
}

/// The body of a webhook (API.md "Webhooks").
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: domain::Timestamp,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    session_id: SessionId,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    participant_id: Option<ParticipantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_on_timeout: Option<&'a ActionOnTimeout>,
    /// The state as of the event (`null` for a deletion).
    state: Option<Box<RawValue>>,
}

/// The body of the webhook for `event`; `session` is the state its write
/// produced (`None` for a deletion), rendered at the event's instant.
pub fn body(event: &AuditEvent, session: Option<&Session>) -> Result<String, serde_json::Error> {
    let kind = WebhookType::of(event.event.kind);
    let state = session
        .map(|s| serde_json::value::to_raw_value(&domain::view(s, event.event.at)))
        .transpose()?;
    serde_json::to_string(&Body {
        kind: kind.name(),
        timestamp: event.event.at,
        data: Data {
            session_id: event.session_id,
            version: event.version,
            participant_id: event.event.participant_id,
            action_on_timeout: session
                .filter(|_| kind == WebhookType::Timeout)
                .map(|s| &s.action_on_timeout),
            state,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sets_parse_names_and_star() {
        let set = EventSet::parse("session.timeout, session.deleted").unwrap();
        assert!(set.contains(WebhookType::Timeout) && set.contains(WebhookType::Deleted));
        assert!(!set.contains(WebhookType::Switched));
        let all = EventSet::parse("*").unwrap();
        assert!(WebhookType::ALL.iter().all(|&t| all.contains(t)));
        assert!(
            EventSet::parse("session.exploded")
                .unwrap_err()
                .contains("session.timeout")
        );
    }
}
