//! Durations as runbooks write them: parsed with humantime, printed compactly.

use std::fmt::Write as _;
use std::time::Duration;

/// Parses a human duration (`20m`, `1h30m`, `90s`, `2 days`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    humantime::parse_duration(text.trim()).map_err(|e| {
        let why = match e {
            E::UnknownUnit { unit, .. } if unit.is_empty() => "a unit is missing".to_owned(),
            E::UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
            E::NumberExpected(_) => "a number is missing".to_owned(),
            E::InvalidCharacter(_) => "unexpected character".to_owned(),
            E::NumberOverflow => "too long".to_owned(),
            E::Empty => "it is empty".to_owned(),
        };
        format!("invalid duration `{text}`: {why}; write it like `20m`, `1h30m` or `90s`")
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn formats_durations_compactly() {
        assert_eq!(fmt_duration(Duration::from_secs(5700)), "1h35m");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_duration(Duration::from_secs(90_000)), "1d1h");
    }
}
