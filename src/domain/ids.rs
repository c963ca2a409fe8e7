//! Parsed identifier and time types, so that a transition can never receive an
//! id that is not a UUID or a timestamp that is not epoch milliseconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses any UUID form, case-insensitively; the canonical form is lower-case.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::try_parse(s).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Uuid's Display is the lower-case hyphenated form the API promises.
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies a session; also decides its Redis bucket.
    SessionId
);
uuid_id!(
    /// Identifies a participant within one session.
    ParticipantId
);
uuid_id!(
    /// Identifies a team in `per_group` mode.
    GroupId
);

/// An instant as epoch milliseconds. Stored and computed as an integer so that
/// arithmetic on deadlines is exact; rendered as RFC 3339 with millisecond
/// precision and a `Z` suffix, as the wire contract requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Epoch milliseconds.
    pub fn ms(self) -> i64 {
        self.0
    }

    /// The instant `ms` milliseconds later.
    pub fn plus(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// `2026-01-01T10:00:00.123Z`; falls back to the epoch for instants that
    /// `time` cannot represent (never produced by a sane clock).
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        let dt =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (h, m, s, ms) = (dt.hour(), dt.minute(), dt.second(), dt.millisecond());
        format!(
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day()
        )
    }

    /// Parses RFC 3339 (any offset) down to millisecond precision.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Self)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_with_milliseconds_and_z() {
        let t = Timestamp(1_767_261_600_123); // 2026-01-01T10:00:00.123Z
        assert_eq!(t.to_rfc3339(), "2026-01-01T10:00:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn ids_parse_case_insensitively_and_print_lower_case() {
        let id = SessionId::parse("A1B2C3D4-0000-4000-8000-00000000000F").unwrap();
        assert_eq!(id.to_string(), "a1b2c3d4-0000-4000-8000-00000000000f");
        assert!(SessionId::parse("not-a-uuid").is_none());
    }
}
