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
        match self.fast_rfc3339() {
            // The buffer holds ASCII digits and separators only.
            Some(buf) => String::from_utf8_lossy(&buf).into_owned(),
            None => self.slow_rfc3339(),
        }
    }

    /// Parses RFC 3339 (any offset) down to millisecond precision.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        Self::parse_fast(s.as_bytes()).or_else(|| {
            let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
            i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
                .ok()
                .map(Self)
        })
    }

    /// Our own form for years 0–9999, written by hand: every state a switch
    /// reads and writes carries four timestamps each way, and `time`'s
    /// general formatting and parsing cost several thousand instructions
    /// apiece (a tenth of a switch's CPU).
    fn fast_rfc3339(self) -> Option<[u8; 24]> {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: i64| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, i64::from(month));
        put(8, 2, i64::from(day));
        put(11, 2, ms_of_day / 3_600_000);
        put(14, 2, ms_of_day / 60_000 % 60);
        put(17, 2, ms_of_day / 1000 % 60);
        put(20, 3, ms_of_day % 1000);
        Some(buf)
    }

    fn slow_rfc3339(self) -> String {
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

    /// Exactly our own form, `YYYY-MM-DDTHH:MM:SS.mmmZ`, plainly valid;
    /// anything else (other offsets, precisions, leap seconds, invalid
    /// dates) is left to `time`'s parser.
    fn parse_fast(b: &[u8]) -> Option<Self> {
        if b.len() != 24 || b[23] != b'Z' {
            return None;
        }
        let separators = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ];
        if separators.iter().any(|&(i, c)| b[i] != c) {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            b[from..to].iter().try_fold(0i64, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
            })
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second, milli) =
            (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
        let month = u32::try_from(month).ok().filter(|m| (1..=12).contains(m))?;
        let day = u32::try_from(day)
            .ok()
            .filter(|&d| d >= 1 && d <= days_in_month(year, month))?;
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(Self(
            days * MS_PER_DAY + hour * 3_600_000 + minute * 60_000 + second * 1000 + milli,
        ))
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// (year, month, day) of a day counted from 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.fast_rfc3339() {
            Some(buf) => s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default()),
            None => s.serialize_str(&self.slow_rfc3339()),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the string in place: no allocation per timestamp.
        struct Rfc3339Visitor;

        impl serde::de::Visitor<'_> for Rfc3339Visitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s).ok_or_else(|| E::custom("invalid RFC 3339 timestamp"))
            }
        }

        d.deserialize_str(Rfc3339Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The hand-written form and parser agree with `time`'s, from year
        /// 0 to 9999, and round-trip.
        #[test]
        fn fast_timestamps_agree_with_time(ms in -62_167_219_200_000i64..253_402_300_799_999) {
            let t = Timestamp(ms);
            let fast = t.to_rfc3339();
            proptest::prop_assert_eq!(&fast, &t.slow_rfc3339());
            proptest::prop_assert_eq!(Timestamp::parse_fast(fast.as_bytes()), Some(t));
            let slow = OffsetDateTime::parse(&fast, &Rfc3339).unwrap();
            proptest::prop_assert_eq!(slow.unix_timestamp_nanos() / 1_000_000, i128::from(ms));
        }
    }

    #[test]
    fn other_forms_are_left_to_the_general_parser() {
        let t = Timestamp(1_767_261_600_123);
        for other in [
            "2026-01-01T11:00:00.123+01:00",
            "2026-01-01T10:00:00.123456Z",
            "2026-01-01t10:00:00.123z",
        ] {
            assert_eq!(Timestamp::parse_fast(other.as_bytes()), None, "{other}");
            assert_eq!(Timestamp::parse_rfc3339(other), Some(t), "{other}");
        }
        for invalid in [
            "2026-02-30T10:00:00.000Z",
            "2026-13-01T10:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T10:00:00.00xZ",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(invalid), None, "{invalid}");
        }
        // Outside years 0–9999 the general formatter takes over.
        assert_eq!(
            Timestamp(-62_167_219_200_001).to_rfc3339(),
            Timestamp(-62_167_219_200_001).slow_rfc3339()
        );
    }

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
