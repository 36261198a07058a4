//! Durations as runbooks write them: parsed with humantime, printed compactly.

use std::fmt::Write as _;
use std::time::Duration;

/// The longest duration a runbook (or a command) may give: a year, leap or not. Longer
/// ones are refused rather than counted wrong.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses a human duration (`20m`, `1h30m`, `90s`, `2 days`), at most `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let too_long = || {
        format!(
            "duration `{text}` is too long: a duration is at most {}",
            fmt_duration(MAX_DURATION)
        )
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > MAX_DURATION => Err(too_long()),
        Ok(d) => Ok(d),
        Err(E::NumberOverflow) => Err(too_long()),
        Err(e) => {
            let why = match e {
                E::UnknownUnit { unit, .. } if unit.is_empty() => "a unit is missing".to_owned(),
                E::UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
                E::NumberExpected(_) => "a number is missing".to_owned(),
                E::InvalidCharacter(_) => "unexpected character".to_owned(),
                E::NumberOverflow => "too long".to_owned(),
                E::Empty => "it is empty".to_owned(),
            };
            Err(format!(
                "invalid duration `{text}`: {why}; write it like `20m`, `1h30m` or `90s`"
            ))
        }
    }
}

/// Whole milliseconds, saturating (never wrapping to a small or negative number).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The same length as a `chrono` duration, saturating at its largest.
pub fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `t + d`, saturating at the last representable time instead of panicking.
pub fn after(t: chrono::DateTime<chrono::Utc>, d: Duration) -> chrono::DateTime<chrono::Utc> {
    t.checked_add_signed(to_chrono(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// A duration as people write it in runbooks: `1h35m`, `20m`, `90s` → `1m30s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}ms", d.as_millis())
        };
    }
    let (days, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(days, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// A time in a zone, as the page writes it: `2026-11-24 20:45 GMT`.
pub fn local(ms: i64, tz: chrono_tz::Tz) -> String {
    match chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, ms).single() {
        Some(t) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        None => String::new(),
    }
}

/// A time written short (`20:45 GMT`) when it falls on the same day as `reference_ms` in
/// `tz`, else with its date (as [`local`]): how a page or an update reads an ETA.
pub fn near(ms: i64, reference_ms: i64, tz: chrono_tz::Tz) -> String {
    let at = |ms| {
        chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, ms)
            .single()
            .map(|t| t.with_timezone(&tz))
    };
    match (at(ms), at(reference_ms)) {
        (Some(t), Some(r)) if t.date_naive() == r.date_naive() => t.format("%H:%M %Z").to_string(),
        _ => local(ms, tz),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_short_on_the_day_of_its_reference_in_its_zone() {
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        let eta = at("2026-12-03T22:30:00Z");
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            near(eta, at("2026-12-03T09:00:00Z"), chrono_tz::UTC),
            "22:30 UTC"
        );
        assert_eq!(near(eta, at("2026-12-03T09:00:00Z"), ny), "17:30 EST");
        // The next day in Tokyo, the same day in UTC.
        let tokyo = chrono_tz::Asia::Tokyo;
        assert_eq!(
            near(eta, at("2026-12-03T09:00:00Z"), tokyo),
            "2026-12-04 07:30 JST"
        );
        assert_eq!(
            near(eta, at("2026-12-02T23:00:00Z"), chrono_tz::UTC),
            "2026-12-03 22:30 UTC"
        );
    }

    #[test]
    fn parses_the_forms_runbooks_use() {
        assert_eq!(parse_duration("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("20x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
        assert!(
            parse_duration("20")
                .unwrap_err()
                .contains("unit is missing")
        );
    }

    #[test]
    fn durations_over_a_year_and_a_day_are_refused() {
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        for long in ["367d", "1000000000y", "99999999999999999999s", "2y"] {
            assert_eq!(
                parse_duration(long),
                Err(format!(
                    "duration `{long}` is too long: a duration is at most 366d"
                )),
            );
        }
    }

    #[test]
    fn conversions_saturate() {
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(millis(huge), i64::MAX);
        assert_eq!(to_chrono(huge), chrono::Duration::MAX);
        let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        assert_eq!(after(t, huge), chrono::DateTime::<chrono::Utc>::MAX_UTC);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
    }

    #[test]
    fn formats_durations_compactly() {
        assert_eq!(fmt_duration(Duration::from_secs(5700)), "1h35m");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_duration(Duration::from_secs(90_000)), "1d1h");
    }
}
