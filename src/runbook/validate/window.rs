//! The maintenance window: its start, length and zone, and timestamps as written.

use super::*;

pub(super) fn validate_window(cx: &mut Ctx, raw: Option<RawWindow>) -> Window {
    let path = FieldPath::root().key("window");
    let Some(raw) = raw else {
        return Window {
            start: None,
            duration: None,
            timezone: Tz::UTC,
        };
    };
    let timezone = match &raw.timezone {
        None => Tz::UTC,
        Some(name) => match name.parse::<Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                let label = did_you_mean(name, &names);
                cx.error(
                    path.key("timezone"),
                    format!("unknown time zone `{name}`; use an IANA name such as `Europe/London`"),
                )
                .label = label;
                Tz::UTC
            }
        },
    };
    let start = raw
        .start
        .as_ref()
        .and_then(|s| match parse_timestamp(s, timezone) {
            Ok(t) => Some(t),
            Err(msg) => {
                cx.error(path.key("start"), msg);
                None
            }
        });
    let duration = raw.duration.map(|d| d.0);
    if duration.is_some_and(|d| d.is_zero()) {
        cx.error(
            path.key("duration"),
            "the window duration must be more than zero",
        );
    }
    Window {
        start,
        duration,
        timezone,
    }
}

/// RFC 3339, or a local date-time read in `tz` (`2026-11-24T19:00:00`, `2026-11-24 19:00`).
pub fn parse_timestamp(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "invalid timestamp `{text}`; write it like `2026-11-24T19:00:00Z` (RFC 3339), or without an offset to use the window's time zone"
        )
    };
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(bad)?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(..) => Err(format!(
            "`{text}` happens twice in {tz} (clocks go back); add an offset such as `+01:00`"
        )),
        chrono::LocalResult::None => Err(format!(
            "`{text}` does not exist in {tz} (clocks go forward); pick another time"
        )),
    }
}
