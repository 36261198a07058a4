//! Online migrations (`NNNN_name.yaml` in a migrations directory): schema changes made
//! without closing the service, as operations that each have an expand half (additive,
//! old and new shapes side by side), a backfill, and a contract half. An operation with
//! no safe online form is refused here, with the reason, before anything runs.

use serde::Deserialize;
use serde_json::Value;

use super::yaml::{self, Node, NodeValue};

/// One operation of an online migration.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A column added; `up` fills it for rows the old version writes (and the backfill).
    AddColumn {
        table: String,
        name: String,
        sql_type: String,
        nullable: bool,
        default: Option<String>,
        up: Option<String>,
    },
    /// A column the new version calls `to`; renamed for real on `complete`.
    RenameColumn {
        table: String,
        from: String,
        to: String,
    },
    /// A column's type changed: a new column beside the old, kept in step both ways.
    AlterColumn {
        table: String,
        column: String,
        sql_type: String,
        up: String,
        down: String,
    },
    /// An index built `CONCURRENTLY`.
    CreateIndex {
        table: String,
        columns: Vec<String>,
        name: Option<String>,
        unique: bool,
    },
}

impl Op {
    pub fn table(&self) -> &str {
        match self {
            Op::AddColumn { table, .. }
            | Op::RenameColumn { table, .. }
            | Op::AlterColumn { table, .. }
            | Op::CreateIndex { table, .. } => table,
        }
    }
}

/// A problem in an online migration file, at 1-based line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Operations people ask for that have no safe online form, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "drop_column",
        "dropping a column breaks the version that still reads it; stop using it first, then drop it in a classic migration",
    ),
    (
        "drop_table",
        "dropping a table breaks the version that still reads it; drop it in a classic migration once no version uses it",
    ),
    (
        "rename_table",
        "a renamed table breaks every query and view of the old version; not supported online",
    ),
    (
        "sql",
        "raw SQL has no known expand and contract halves; use a classic `.up.sql` migration",
    ),
];

/// Operations an online migration has.
const KNOWN: &[&str] = &[
    "add_column",
    "rename_column",
    "alter_column",
    "create_index",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdd {
    table: String,
    column: RawColumn,
    up: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    #[serde(default = "yes")]
    nullable: bool,
    default: Option<Value>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRename {
    table: String,
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlter {
    table: String,
    column: String,
    #[serde(rename = "type")]
    sql_type: Option<String>,
    up: Option<String>,
    down: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    table: String,
    columns: Vec<String>,
    name: Option<String>,
    #[serde(default)]
    unique: bool,
}

/// A plain SQL identifier: what the migration names (tables, columns, indexes).
pub fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_lowercase() || f == '_')
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        && s.len() <= 48
}

fn read<T: serde::de::DeserializeOwned>(n: &Node) -> Result<T, String> {
    serde_json::from_value(n.to_json()).map_err(|e| e.to_string())
}

fn at(n: &Node) -> (usize, usize) {
    (n.span.start.line as usize, n.span.start.col as usize + 1)
}

/// Reads an online migration: `operations:`, a list of one-key mappings.
pub fn parse(text: &str) -> Result<Vec<Op>, Vec<OnlineError>> {
    let err = |(line, col): (usize, usize), message: String| OnlineError { line, col, message };
    let root = yaml::parse(text).map_err(|e| {
        vec![err(
            (e.span.start.line as usize, e.span.start.col as usize + 1),
            e.message,
        )]
    })?;
    let mut errors = Vec::new();
    let Some((_, ops)) = root.entry("operations") else {
        return Err(vec![err(
            at(&root),
            "an online migration needs `operations:`, a list".into(),
        )]);
    };
    if let NodeValue::Map(entries) = &root.value {
        for (k, _) in entries {
            if k.as_str() != Some("operations") {
                errors.push(err(
                    at(k),
                    format!(
                        "unknown field `{}` (an online migration has `operations`)",
                        k.as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let NodeValue::Seq(items) = &ops.value else {
        return Err(vec![err(
            at(ops),
            "`operations` is a list of operations".into(),
        )]);
    };
    if items.is_empty() {
        errors.push(err(at(ops), "`operations` is empty".into()));
    }
    let mut out = Vec::new();
    for item in items {
        let NodeValue::Map(entries) = &item.value else {
            errors.push(err(
                at(item),
                format!(
                    "an operation is a mapping such as `add_column: {{ ... }}`; known: {}",
                    KNOWN.join(", ")
                ),
            ));
            continue;
        };
        let [(key, body)] = entries.as_slice() else {
            errors.push(err(
                at(item),
                "an operation has exactly one kind (`add_column: { ... }`)".into(),
            ));
            continue;
        };
        let kind = key.as_str().unwrap_or_default();
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == kind) {
            errors.push(err(
                at(key),
                format!("`{kind}` has no safe online form: {why}"),
            ));
            continue;
        }
        let op = match kind {
            "add_column" => read(body).map(|r: RawAdd| Op::AddColumn {
                table: r.table,
                name: r.column.name,
                sql_type: r.column.sql_type,
                nullable: r.column.nullable,
                default: r.column.default.map(|d| match d {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
                up: r.up,
            }),
            "rename_column" => read(body).map(|r: RawRename| Op::RenameColumn {
                table: r.table,
                from: r.from,
                to: r.to,
            }),
            "alter_column" => match read(body) {
                Ok(RawAlter { up: None, .. }) => Err("a type change needs `up`: how the old version's value becomes the new column's".into()),
                Ok(RawAlter { down: None, .. }) => Err("a type change needs `down`: how the new version's value becomes the old column's, so that the old version keeps working".into()),
                Ok(RawAlter { sql_type: None, .. }) => Err("`alter_column` needs the new `type`".into()),
                Ok(RawAlter { table, column, sql_type: Some(t), up: Some(up), down: Some(down) }) => Ok(Op::AlterColumn { table, column, sql_type: t, up, down }),
                Err(e) => Err(e),
            },
            "create_index" => read(body).map(|r: RawIndex| Op::CreateIndex {
                table: r.table,
                columns: r.columns,
                name: r.name,
                unique: r.unique,
            }),
            other => {
                let hint = crate::suggest::did_you_mean(other, KNOWN).map(|h| format!(" ({h})")).unwrap_or_default();
                errors.push(err(at(key), format!("unknown operation `{other}`{hint}; known: {}", KNOWN.join(", "))));
                continue;
            }
        };
        match op.and_then(check) {
            Ok(op) => out.push(op),
            Err(e) => errors.push(err(at(body), format!("`{kind}`: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The rules of one operation that need no database.
fn check(op: Op) -> Result<Op, String> {
    let names: Vec<&str> = match &op {
        Op::AddColumn { table, name, .. } => vec![table, name],
        Op::RenameColumn { table, from, to } => vec![table, from, to],
        Op::AlterColumn { table, column, .. } => vec![table, column],
        Op::CreateIndex {
            table,
            columns,
            name,
            ..
        } => {
            let mut v: Vec<&str> = vec![table];
            v.extend(columns.iter().map(String::as_str));
            v.extend(name.as_deref());
            v
        }
    };
    if let Some(bad) = names.iter().find(|n| !is_ident(n)) {
        return Err(format!(
            "`{bad}` is not a plain identifier (lowercase letters, digits and `_`, at most 48)"
        ));
    }
    match &op {
        Op::AddColumn {
            nullable: false,
            default: None,
            up: None,
            name,
            ..
        } => {
            return Err(format!(
                "NOT NULL column `{name}` needs `up` (or a `default`): rows the old version writes must get a value"
            ));
        }
        Op::AddColumn { sql_type, .. } | Op::AlterColumn { sql_type, .. }
            if sql_type.contains(';') =>
        {
            return Err(format!("`{sql_type}` is not a type"));
        }
        Op::CreateIndex { columns, .. } if columns.is_empty() => {
            return Err("an index needs `columns`".into());
        }
        Op::RenameColumn { from, to, .. } if from == to => {
            return Err(format!("`{from}` is renamed to itself"));
        }
        _ => {}
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_reads_and_unsafe_operations_are_refused_with_the_reason() {
        let ops = parse(
            "operations:\n  - add_column:\n      table: orders\n      column: { name: total_cents, type: bigint, nullable: false }\n      up: \"qty * price_cents\"\n  - rename_column: { table: accounts, from: name, to: display_name }\n  - alter_column:\n      table: orders\n      column: qty\n      type: bigint\n      up: \"qty::bigint\"\n      down: \"least(qty, 2147483647)::int\"\n  - create_index: { table: orders, columns: [account_id, created_at] }\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 4);
        assert!(
            matches!(&ops[0], Op::AddColumn { nullable: false, up: Some(u), .. } if u == "qty * price_cents")
        );
        let e = parse("operations:\n  - drop_column: { table: t, column: c }\n").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (2, 5));
        assert!(e[0].message.contains("no safe online form"), "{e:?}");
        let e = parse("operations:\n  - add_column: { table: t, column: { name: c, type: int, nullable: false } }\n").unwrap_err();
        assert!(e[0].message.contains("needs `up`"), "{e:?}");
        let e = parse("operations:\n  - alter_column: { table: t, column: c, type: bigint }\n")
            .unwrap_err();
        assert!(e[0].message.contains("needs `up`"), "{e:?}");
        let e = parse("operations:\n  - add_colum: {}\n").unwrap_err();
        assert!(e[0].message.contains("did you mean `add_column`"), "{e:?}");
    }
}
