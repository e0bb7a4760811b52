//! Go `time.Duration` text, as Dkron job configs carry it: a strict parser
//! for values like "300ms", "1.5h" or "2h45m" (so a config Dkron accepts is
//! accepted here and one it rejects is rejected), and Go's `Duration.String`
//! formatting, used when messages quote a duration back to the user.
//! Negative durations are rejected: a negative timeout has no meaning.

use std::time::Duration;

/// Go's Duration is an i64 of nanoseconds; larger values are an error there.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parse a Go duration string ("300ms", "1.5h", "2h45m", "0").
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let err = || format!("time: invalid duration \"{input}\"");
    let mut s = input;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    // Go accepts a bare "0" (and only that) without a unit.
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        // "." alone, or a unit with no number before it, is invalid.
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let (unit, rest) = rest.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            // Go accepts both MICRO SIGN and GREEK SMALL LETTER MU.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(format!("time: missing unit in duration \"{input}\"")),
            other => {
                return Err(format!(
                    "time: unknown unit \"{other}\" in duration \"{input}\""
                ));
            }
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut value = int_value.checked_mul(unit_nanos).ok_or_else(err)?;
        // Fractions past nanosecond precision cannot matter; 20 digits keep
        // the arithmetic within u128.
        let frac_digits = &frac_part[..frac_part.len().min(20)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| err())?;
            let scale = 10u128.pow(frac_digits.len() as u32);
            value += frac * unit_nanos / scale;
        }
        total = total.checked_add(value).ok_or_else(err)?;
        if total > MAX_NANOS {
            return Err(err());
        }
        s = rest;
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Format like Go's `Duration.String`: "0s", "300ms", "1.5µs", "2h45m0s".
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000_000_000 {
        let (unit, scale) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fixed_point(ns, scale));
    }
    let h = ns / 3_600_000_000_000;
    let m = (ns / 60_000_000_000) % 60;
    let s = fixed_point(ns % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `value / scale` as a decimal without trailing zeros ("1.5", "2").
fn fixed_point(value: u128, scale: u128) -> String {
    let int = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return int.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let table: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("300ms", Duration::from_millis(300)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("10s", Duration::from_secs(10)),
            ("0s", Duration::ZERO),
            ("1ns", Duration::from_nanos(1)),
            ("5us", Duration::from_micros(5)),
            ("5µs", Duration::from_micros(5)),
            ("5μs", Duration::from_micros(5)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("1h2m3s4ms", Duration::new(3723, 4_000_000)),
            ("1.0000000001s", Duration::new(1, 0)),
        ];
        for (text, want) in table {
            assert_eq!(parse_go_duration(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_non_go_durations() {
        for text in [
            "",
            "1 hour",
            "-5m",
            "PT1H",
            "1d",
            "10",
            "1.5",
            ".",
            ".s",
            "s",
            "1h ",
            " 1h",
            "1hh",
            "1x",
            "1e3s",
            "+",
            "-0",
            "9999999999h",
        ] {
            assert!(
                parse_go_duration(text).is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn formats_like_go() {
        let table: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(100), "100ns"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(2 * 3600 + 45 * 60), "2h45m0s"),
            (Duration::new(3723, 4_000_000), "1h2m3.004s"),
        ];
        for (d, want) in table {
            assert_eq!(format_go_duration(*d), *want);
        }
    }
}
