//! Go's `time.ParseDuration` grammar, which Dkron uses for `@every` and shell `timeout`.
//!
//! jiff's own parser accepts forms Go rejects (`1 hour`, `PT1H`) and rejects `0`, so Dkron's
//! accept/reject set needs this small strict parser.

use std::time::Duration;

/// Parses `300ms`, `1.5h`, `2h45m`, `10s`, `0`. Negative durations are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}: use a Go duration such as 10s, 1m30s or 1h");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = next;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_table() {
        let ok = [
            ("0", 0.0),
            ("10s", 10.0),
            ("300ms", 0.3),
            ("1.5h", 5400.0),
            ("2h45m", 9900.0),
            ("1m0.5s", 60.5),
            ("1µs", 1e-6),
        ];
        for (s, secs) in ok {
            let d = parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!((d.as_secs_f64() - secs).abs() < 1e-9, "{s}");
        }
        for bad in [
            "",
            "1 hour",
            "PT1H",
            "-5m",
            "10",
            "1d",
            "s",
            "1.2.3s",
            "foreverandever",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should be rejected");
        }
    }
}
