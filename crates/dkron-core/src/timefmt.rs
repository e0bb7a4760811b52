//! Dkron's timestamp conventions on the wire.
//!
//! Go's `time.Time` renders RFC 3339 with nanoseconds and its zero value as
//! `0001-01-01T00:00:00Z`; nullable times are `null`. On input Dkron also accepts the HTML
//! `datetime-local` form `2006-01-02T15:04` (taken as UTC), which its UI sends.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serializer};

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Parses an RFC 3339 timestamp with offset, or `YYYY-MM-DDTHH:MM[:SS]` as UTC.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    // Only the civil forms without an offset are taken as UTC; anything else is an error.
    if s.len() >= 16
        && s.as_bytes().get(10) == Some(&b'T')
        && !s.ends_with('Z')
        && let Ok(dt) = s.parse::<jiff::civil::DateTime>()
        && let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp());
    }
    Err(format!(
        "cannot parse {s:?} as a time: use RFC 3339 (2006-01-02T15:04:05Z) or 2006-01-02T15:04"
    ))
}

/// `Option<Timestamp>` as Dkron's nullable time: `null` or an RFC 3339 string.
pub mod nullable {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ts) => s.collect_str(ts),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        match raw.as_deref() {
            None | Some("") | Some(ZERO_TIME) => Ok(None),
            Some(s) => parse_timestamp(s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `Option<Timestamp>` as Go's non-nullable `time.Time`: absent is the zero time.
pub mod zero_is_none {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ts) => s.collect_str(ts),
            None => s.serialize_str(ZERO_TIME),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        super::nullable::deserialize(d)
    }
}

/// `ts` as Go renders a `time.Time` in location `tz` (RFC 3339, nanoseconds without trailing
/// zeros): with the zone's offset at that instant, or `Z` where the offset is zero.
pub fn in_zone(ts: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let offset = tz.to_offset(ts);
    if offset == jiff::tz::Offset::UTC {
        ts.to_string()
    } else {
        ts.display_with_offset(offset).to_string()
    }
}

/// Unix nanoseconds of a timestamp, saturating (ids and groups are built from it).
pub fn unix_nanos(ts: Timestamp) -> i64 {
    i64::try_from(ts.as_nanosecond()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dkron_time_forms() {
        let utc = parse_timestamp("2025-12-19T09:09:00Z").unwrap();
        assert_eq!(utc.to_string(), "2025-12-19T09:09:00Z");
        let off = parse_timestamp("2025-12-19T09:09:00+01:00").unwrap();
        assert_eq!(off.to_string(), "2025-12-19T08:09:00Z");
        let local = parse_timestamp("2025-12-19T09:09").unwrap();
        assert_eq!(local, utc);
        assert!(parse_timestamp("not-a-date").is_err());
        assert!(parse_timestamp("{invalid}").is_err());
    }

    #[test]
    fn renders_in_a_zone_as_go_does() {
        let ts = parse_timestamp("2025-01-01T10:00:00.5Z").unwrap();
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(in_zone(ts, &berlin), "2025-01-01T11:00:00.5+01:00");
        let summer = parse_timestamp("2025-07-01T10:00:00Z").unwrap();
        assert_eq!(in_zone(summer, &berlin), "2025-07-01T12:00:00+02:00");
        let london = jiff::tz::TimeZone::get("Europe/London").unwrap();
        assert_eq!(in_zone(ts, &london), "2025-01-01T10:00:00.5Z");
        let ny = jiff::tz::TimeZone::get("America/New_York").unwrap();
        assert_eq!(in_zone(ts, &ny), "2025-01-01T05:00:00.5-05:00");
        // What it renders reads back as the same instant.
        assert_eq!(parse_timestamp(&in_zone(ts, &ny)).unwrap(), ts);
    }

    #[test]
    fn zero_time_round_trips_as_none() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct T {
            #[serde(with = "zero_is_none")]
            next: Option<Timestamp>,
            #[serde(with = "nullable")]
            last: Option<Timestamp>,
        }
        let t: T = serde_json::from_str(r#"{"next":"0001-01-01T00:00:00Z","last":null}"#).unwrap();
        assert!(t.next.is_none() && t.last.is_none());
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"next":"0001-01-01T00:00:00Z","last":null}"#
        );
    }
}
