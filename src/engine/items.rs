//! What fan-out items are called: in log lines, `status`, log file names and the report.
//! An item is named by its `name` field (an item that is a map), else by the step's
//! `item_label` template, else by its value.

use serde_json::Value;

/// Longest name kept (in characters); a longer one is cut with `…`.
const MAX_NAME: usize = 80;

/// The `name` field of an item that is a map, if it has one.
pub fn name_field(item: &Value) -> Option<String> {
    match item.get("name")? {
        Value::String(s) if !s.trim().is_empty() => Some(shorten(s.trim())),
        n @ Value::Number(_) => Some(n.to_string()),
        _ => None,
    }
}

/// The name of `item` from itself: its `name` field, else its value (a string as it is,
/// anything else as JSON).
pub fn of_value(item: &Value) -> String {
    name_field(item).unwrap_or_else(|| match item {
        Value::String(s) => shorten(s.trim()),
        other => shorten(&other.to_string()),
    })
}

/// A name cut to [`MAX_NAME`] characters, on a character boundary.
pub fn shorten(name: &str) -> String {
    if name.chars().count() <= MAX_NAME {
        return name.to_owned();
    }
    let mut cut: String = name.chars().take(MAX_NAME - 1).collect();
    cut.push('…');
    cut
}

/// An item in words: `item NAME`, or `item N` for an item without a name.
pub fn words(index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("item {index}")
    } else {
        format!("item {name}")
    }
}

/// The stems of the items' files (`STEP.NAME`, so `STEP.NAME.log`): the name where it
/// is safe in a file name and no other item of the step has it, else the item's index
/// (`STEP.N`).
pub fn stems(step: &str, names: &[String]) -> Vec<String> {
    let mut uses: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(names.len());
    for n in names {
        *uses.entry(n.as_str()).or_default() += 1;
    }
    names
        .iter()
        .enumerate()
        .map(|(ix, name)| {
            let safe = !name.is_empty()
                && name.len() <= 64
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                // Not taken by another item, nor by another item's index.
                && uses.get(name.as_str()) == Some(&1)
                && name.parse::<usize>().map_or(true, |n| n == ix);
            if safe {
                format!("{step}.{name}")
            } else {
                format!("{step}.{ix}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_item_is_named_by_its_name_field_else_its_value() {
        assert_eq!(of_value(&json!("mops_platform")), "mops_platform");
        assert_eq!(of_value(&json!({ "name": "acme", "db": "x" })), "acme");
        assert_eq!(of_value(&json!({ "db": "x" })), r#"{"db":"x"}"#);
        assert_eq!(of_value(&json!(42)), "42");
        assert_eq!(of_value(&json!("x".repeat(100))).chars().count(), 80);
        assert_eq!(words(3, "acme"), "item acme");
        assert_eq!(words(3, ""), "item 3");
    }

    #[test]
    fn file_stems_use_names_only_when_they_are_safe_and_unique() {
        let names: Vec<String> = ["a", "b/c", "a", "d", "7", "2", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            stems("fan", &names),
            [
                "fan.0", "fan.1", "fan.2", "fan.d", "fan.4", "fan.5", "fan.6"
            ]
        );
        let tidy: Vec<String> = vec!["tenant_a".into(), "tenant-b".into()];
        assert_eq!(stems("tidy", &tidy), ["tidy.tenant_a", "tidy.tenant-b"]);
    }
}
