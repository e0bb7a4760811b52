//! The schedule language: what Dkron accepts in a job's `schedule`, and when it fires next.
//!
//! Accepted: 6-field cron with seconds (robfig syntax), `@yearly`/`@annually`, `@monthly`,
//! `@weekly`, `@daily`/`@midnight`, `@hourly`, `@minutely`, `@every <go duration>`,
//! `@at <RFC 3339>`, `@after <RFC 3339> <<ISO 8601 grace>` (Dkron 4.1), `@manually`, an optional `TZ=<zone> ` / `CRON_TZ=<zone> ` prefix, and the
//! `~` hash that spreads jobs by name. DST policy (docs/scheduling.md): a wall-clock time skipped
//! by a spring-forward fires at the first instant after the gap; a time repeated by a fall-back
//! fires once, on its first pass. Descriptors follow the job's time zone like cron lines do.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::godur::parse_go_duration;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron line; `tz` is set when the spec carried its own `TZ=` prefix.
    Cron {
        cron: Box<Cron>,
        tz: Option<TimeZone>,
    },
    /// Fixed interval, phase anchored at the job's schedule anchor.
    Every(Duration),
    /// One shot at an instant.
    At(Timestamp),
    /// One shot at an instant, or at once when the job is set within `grace` after it (Dkron
    /// 4.1's `@after`); past the grace, never.
    After {
        at: Timestamp,
        grace: jiff::SignedDuration,
    },
    /// Never fires on its own.
    Manually,
}

/// Loads a job's time zone: `""` is UTC (not the leader's local zone, so a failover never moves
/// a job's fire times), `"Local"` is this process's zone, anything else an IANA name.
pub fn load_timezone(name: &str) -> Result<TimeZone, String> {
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::system()),
        _ => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}")),
    }
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .sloppy_ranges(true)
        .build()
}

/// Dkron's `~` hash: each `~` becomes a number derived from the sum of the job name's code
/// points, with a modulus chosen by the field it stands in.
pub fn apply_hash(spec: &str, job_name: &str) -> String {
    if !spec.contains('~') || spec.split_whitespace().any(|p| p.starts_with('@')) {
        return spec.to_string();
    }
    let h: u64 = job_name.chars().map(|c| c as u64).sum();
    let mut field = 0;
    let parts: Vec<String> = spec
        .split(' ')
        .map(|part| {
            if part.is_empty() || part.starts_with("TZ=") || part.starts_with("CRON_TZ=") {
                return part.to_string();
            }
            let value = match field {
                0 | 1 => h % 60,
                2 => h % 24,
                3 => h % 28 + 1,
                4 => h % 12 + 1,
                _ => h % 7,
            };
            field += 1;
            part.replace('~', &value.to_string())
        })
        .collect();
    parts.join(" ")
}

impl Schedule {
    /// Parses a job's schedule (after the `~` hash for `job_name`). Errors use Dkron's wording.
    pub fn parse(spec: &str, job_name: &str) -> Result<Schedule, String> {
        let hashed = apply_hash(spec, job_name);
        let spec = hashed.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let (tz, body) = split_tz_prefix(spec)?;
        if let Some(rest) = body.strip_prefix('@') {
            let (word, arg) = match rest.split_once(char::is_whitespace) {
                Some((w, a)) => (w, a.trim()),
                None => (rest, ""),
            };
            let cron_line = match word {
                "yearly" | "annually" => "0 0 0 1 1 *",
                "monthly" => "0 0 0 1 * *",
                "weekly" => "0 0 0 * * 0",
                "daily" | "midnight" => "0 0 0 * * *",
                "hourly" => "0 0 * * * *",
                "minutely" => "0 * * * * *",
                "every" => {
                    let d = parse_go_duration(arg)
                        .map_err(|e| format!("failed to parse duration {arg}: {e}"))?;
                    // Dkron rounds sub-second intervals up to one second and drops fractions.
                    let secs = d.as_secs().max(1);
                    return Ok(Schedule::Every(Duration::from_secs(secs)));
                }
                "at" => {
                    if tz.is_some() {
                        return Err(format!("unrecognized descriptor: {body}"));
                    }
                    let at = arg
                        .parse::<Timestamp>()
                        .map_err(|e| format!("failed to parse date @at {arg}: {e}"))?;
                    return Ok(Schedule::At(at));
                }
                "after" => {
                    if tz.is_some() {
                        return Err(format!("unrecognized descriptor: {body}"));
                    }
                    return parse_after(arg, spec);
                }
                "manually" => return Ok(Schedule::Manually),
                _ => return Err(format!("unrecognized descriptor: {body}")),
            };
            if !arg.is_empty() {
                return Err(format!("unrecognized descriptor: {body}"));
            }
            return parse_cron(cron_line, tz);
        }
        let fields: Vec<&str> = body.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(format!(
                "expected exactly 6 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        // robfig allows `?` in any field; croner only in the day fields.
        let line = fields
            .iter()
            .map(|f| if *f == "?" { "*" } else { f })
            .collect::<Vec<_>>()
            .join(" ");
        parse_cron(&line, tz)
    }

    /// The first fire strictly after `after`. `job_tz` is the job's zone; `anchor` fixes the
    /// phase of `@every`. `None` means the schedule never fires again.
    pub fn next_after(
        &self,
        after: Timestamp,
        job_tz: &TimeZone,
        anchor: Timestamp,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Manually => None,
            Schedule::At(at) | Schedule::After { at, .. } => (*at > after).then_some(*at),
            Schedule::Every(interval) => {
                let step = i128::try_from(interval.as_nanos()).ok()?.max(1);
                let anchor_ns = anchor.as_nanosecond();
                let after_ns = after.as_nanosecond();
                let k = if after_ns < anchor_ns {
                    1
                } else {
                    (after_ns - anchor_ns) / step + 1
                };
                Timestamp::from_nanosecond(anchor_ns + k * step).ok()
            }
            Schedule::Cron { cron, tz } => {
                let zone = tz.as_ref().unwrap_or(job_tz);
                let start = after.to_zoned(zone.clone());
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|z| z.timestamp())
            }
        }
    }
}

impl Schedule {
    /// The schedule in words, for people: "At 08:30:00 on Monday through Friday",
    /// "Every 10 seconds". `job_zone` is the job's time zone name (`""` is UTC); a `TZ=`
    /// prefix in the spec wins over it.
    pub fn describe(&self, job_zone: &str) -> String {
        let zone_name = |tz: Option<&TimeZone>| match tz.and_then(|t| t.iana_name()) {
            Some(name) => name.to_string(),
            None if job_zone.is_empty() => "UTC".to_string(),
            None => job_zone.to_string(),
        };
        match self {
            Schedule::Manually => {
                "Only when run by hand (API, CLI, dashboard) or by its parent job".into()
            }
            Schedule::At(at) => format!("Once, at {at}"),
            Schedule::After { at, grace } => format!(
                "Once, at {at} (or at once if set up to {} later)",
                in_words(grace.unsigned_abs())
            ),
            Schedule::Every(interval) => format!("Every {}", in_words(*interval)),
            Schedule::Cron { cron, tz } => {
                format!("{} ({})", cron.describe(), zone_name(tz.as_ref()))
            }
        }
    }
}

/// `@after <RFC 3339> <<ISO 8601 duration>`, e.g. `@after 2025-01-01T00:00:00Z <PT2H`, with
/// Dkron's messages.
fn parse_after(arg: &str, spec: &str) -> Result<Schedule, String> {
    let parts: Vec<&str> = arg.split_whitespace().collect();
    let [date, grace] = parts[..] else {
        return Err(format!(
            "@after requires format: @after <RFC3339 datetime> <ISO8601 duration>, got: {spec}"
        ));
    };
    let at = date
        .parse::<Timestamp>()
        .map_err(|e| format!("failed to parse date in @after: {date}: {e}"))?;
    let Some(iso) = grace.strip_prefix('<') else {
        return Err(format!("grace period must start with '<', got: {grace}"));
    };
    let bad = |e: String| format!("failed to parse grace period in @after: {iso}: {e}");
    let span: jiff::Span = iso.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
    let grace = span
        .to_duration(&at.to_zoned(TimeZone::UTC))
        .map_err(|e| bad(e.to_string()))?;
    if grace.is_negative() {
        return Err(bad("a grace period cannot be negative".into()));
    }
    Ok(Schedule::After { at, grace })
}

/// `1h30m` → "1 hour 30 minutes".
fn in_words(d: Duration) -> String {
    let secs = d.as_secs();
    let parts: Vec<String> = [
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ]
    .iter()
    .scan(secs, |left, (unit, name)| {
        let n = *left / unit;
        *left %= unit;
        Some((n, *name))
    })
    .filter(|(n, _)| *n > 0)
    .map(|(n, name)| {
        if n == 1 {
            format!("1 {name}")
        } else {
            format!("{n} {name}s")
        }
    })
    .collect();
    if parts.is_empty() || parts == ["1 second"] {
        "second".into()
    } else {
        parts.join(" ")
    }
}

fn split_tz_prefix(spec: &str) -> Result<(Option<TimeZone>, &str), String> {
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            let (zone, body) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("provided bad location {rest}: missing schedule"))?;
            let tz =
                TimeZone::get(zone).map_err(|e| format!("provided bad location {zone}: {e}"))?;
            return Ok((Some(tz), body.trim_start()));
        }
    }
    Ok((None, spec))
}

fn parse_cron(line: &str, tz: Option<TimeZone>) -> Result<Schedule, String> {
    let cron = cron_parser().parse(line).map_err(|e| e.to_string())?;
    Ok(Schedule::Cron {
        cron: Box::new(cron),
        tz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, tz: &str, after: &str) -> Option<String> {
        let s = Schedule::parse(spec, "test_job").unwrap();
        let zone = load_timezone(tz).unwrap();
        s.next_after(ts(after), &zone, ts("2026-01-01T00:00:00Z"))
            .map(|t| t.to_string())
    }

    #[test]
    fn after_takes_a_time_and_an_iso_grace_with_dkrons_messages() {
        let parsed = Schedule::parse("@after 2025-01-01T00:00:00Z <PT2H", "j").unwrap();
        let Schedule::After { at, grace } = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(at, "2025-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(grace, jiff::SignedDuration::from_hours(2));
        let long = Schedule::parse("@after 2025-01-01T00:00:00Z <P30D", "j").unwrap();
        assert!(
            matches!(long, Schedule::After { grace, .. } if grace == jiff::SignedDuration::from_hours(720))
        );
        for (spec, message) in [
            ("@after 2025-01-01T00:00:00Z", "@after requires format"),
            ("@after nope <PT1H", "failed to parse date in @after"),
            (
                "@after 2025-01-01T00:00:00Z PT1H",
                "grace period must start with '<'",
            ),
            (
                "@after 2025-01-01T00:00:00Z <soon",
                "failed to parse grace period",
            ),
        ] {
            let err = Schedule::parse(spec, "j").unwrap_err();
            assert!(err.contains(message), "{spec}: {err}");
        }
    }

    #[test]
    fn accepts_and_rejects_like_dkron() {
        for ok in [
            "0 30 8 * * MON-FRI",
            "@every 10s",
            "@every 1h30m",
            "@daily",
            "@midnight",
            "@minutely",
            "@manually",
            "@at 2018-01-02T15:04:00Z",
            "0/15 * * * * *",
            "? * * * * *",
            "TZ=Europe/Madrid 0 0 1 * * *",
            "CRON_TZ=UTC @daily",
        ] {
            Schedule::parse(ok, "j").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = |s: &str| Schedule::parse(s, "j").unwrap_err();
        assert_eq!(err(""), "empty spec string");
        assert!(err("* * * * *").starts_with("expected exactly 6 fields, found 5"));
        assert!(err("@at badtime").starts_with("failed to parse date @at badtime"));
        assert!(err("@reboot").starts_with("unrecognized descriptor"));
        assert!(err("TZ=Nowhere/Land * * * * * *").starts_with("provided bad location"));
        assert!(err("@every 1 hour").contains("duration"));
        assert!(err("61 * * * * *").len() > 3);
    }

    #[test]
    fn hash_matches_dkron_examples() {
        assert_eq!(apply_hash("0 0 ~ * * *", "test_job"), "0 0 18 * * *");
        assert_eq!(
            apply_hash("TZ=Europe/Madrid 0 0 1 * ~ *", "test_job"),
            "TZ=Europe/Madrid 0 0 1 * 7 *"
        );
        assert_eq!(
            apply_hash("TZ=Europe/Madrid @at something with ~", "test_job"),
            "TZ=Europe/Madrid @at something with ~"
        );
    }

    #[test]
    fn every_keeps_its_phase_from_the_anchor() {
        let s = Schedule::parse("@every 10s", "j").unwrap();
        let anchor = ts("2026-01-01T00:00:03.250Z");
        let n = s.next_after(ts("2026-01-01T00:01:00Z"), &TimeZone::UTC, anchor);
        assert_eq!(n.unwrap().to_string(), "2026-01-01T00:01:03.25Z");
        // Exactly on a fire time, the next one is a whole interval later.
        let n = s.next_after(ts("2026-01-01T00:01:03.25Z"), &TimeZone::UTC, anchor);
        assert_eq!(n.unwrap().to_string(), "2026-01-01T00:01:13.25Z");
        let sub = Schedule::parse("@every 500ms", "j").unwrap();
        assert!(matches!(sub, Schedule::Every(d) if d == Duration::from_secs(1)));
    }

    #[test]
    fn cron_runs_in_the_jobs_zone() {
        assert_eq!(
            next("0 30 8 * * *", "Europe/Berlin", "2026-06-01T00:00:00Z").unwrap(),
            "2026-06-01T06:30:00Z"
        );
        // A descriptor follows the job's zone too.
        assert_eq!(
            next("@daily", "Asia/Taipei", "2026-06-01T00:00:00Z").unwrap(),
            "2026-06-01T16:00:00Z"
        );
        // The prefix wins over the job zone.
        assert_eq!(
            next("TZ=UTC 0 0 0 * * *", "Asia/Taipei", "2026-06-01T00:00:00Z").unwrap(),
            "2026-06-02T00:00:00Z"
        );
    }

    #[test]
    fn dst_spring_forward_fires_after_the_gap_and_fall_back_fires_once() {
        // Berlin 2026-03-29: 02:00 -> 03:00. 02:30 does not exist; it fires at 03:00 local.
        assert_eq!(
            next("0 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z").unwrap(),
            "2026-03-29T01:00:00Z"
        );
        // 2026-10-25: 03:00 -> 02:00. 02:30 happens twice; it fires on the first pass only.
        let first = next("0 30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z").unwrap();
        assert_eq!(first, "2026-10-25T00:30:00Z");
        let second = next("0 30 2 * * *", "Europe/Berlin", &first).unwrap();
        assert_eq!(second, "2026-10-26T01:30:00Z");
    }

    #[test]
    fn schedules_in_words() {
        let describe =
            |spec: &str, zone: &str| Schedule::parse(spec, "job").unwrap().describe(zone);
        assert_eq!(describe("@every 10s", ""), "Every 10 seconds");
        assert_eq!(describe("@every 1h30m", ""), "Every 1 hour 30 minutes");
        assert_eq!(describe("@every 1s", ""), "Every second");
        assert!(describe("@manually", "").starts_with("Only when run by hand"));
        assert_eq!(
            describe("@at 2030-01-02T03:04:05Z", ""),
            "Once, at 2030-01-02T03:04:05Z"
        );
        let weekdays = describe("0 30 8 * * MON-FRI", "Europe/Berlin");
        assert!(weekdays.contains("08:30"), "{weekdays}");
        assert!(
            weekdays.contains("Monday") && weekdays.contains("Friday"),
            "{weekdays}"
        );
        assert!(weekdays.ends_with("(Europe/Berlin)"), "{weekdays}");
        assert!(describe("@daily", "").ends_with("(UTC)"));
        assert!(describe("TZ=Asia/Tokyo 0 0 9 * * *", "Europe/Berlin").ends_with("(Asia/Tokyo)"));
    }

    #[test]
    fn at_fires_once_and_manual_never() {
        assert_eq!(
            next("@at 2026-02-01T00:00:00Z", "", "2026-01-15T00:00:00Z").unwrap(),
            "2026-02-01T00:00:00Z"
        );
        assert_eq!(
            next("@at 2026-02-01T00:00:00Z", "", "2026-03-01T00:00:00Z"),
            None
        );
        assert_eq!(next("@manually", "", "2026-03-01T00:00:00Z"), None);
        assert_eq!(next("0 0 0 30 2 *", "", "2026-03-01T00:00:00Z"), None);
    }

    #[test]
    fn timezones_load_or_name_the_problem() {
        assert!(load_timezone("Europe/Berlin").is_ok());
        assert_eq!(
            load_timezone("Asis/Taipei").unwrap_err(),
            "unknown time zone Asis/Taipei"
        );
    }
}
