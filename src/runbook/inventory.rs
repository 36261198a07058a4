//! Ansible inventory files, INI or YAML: groups, hosts with their `ansible_*`
//! connection values and other vars, `:vars` and `:children` (INI) or `vars` and
//! `children` (YAML), numeric and letter ranges (`web[01:20].example.com`). Every problem
//! has its line and column in the file.

use indexmap::IndexMap;
use serde_json::Value;

use super::yaml::{self, Node, NodeValue, Scalar};

/// A host as an inventory file defines it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileHost {
    pub name: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<String>,
    pub vars: IndexMap<String, Value>,
    /// Groups, including those it is in through `children`.
    pub groups: Vec<String>,
    /// Line (1-based) of its first definition.
    pub line: usize,
}

/// A problem in an inventory file, at 1-based line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct InvError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

fn err(line: usize, col: usize, message: impl Into<String>) -> InvError {
    InvError {
        line,
        col,
        message: message.into(),
    }
}

/// What a file defines, before group vars and children are applied.
#[derive(Default)]
struct Groups {
    /// Group → (its own hosts, its children, its vars), in the order first seen.
    groups: IndexMap<String, Group>,
    hosts: IndexMap<String, FileHost>,
}

#[derive(Default)]
struct Group {
    hosts: Vec<String>,
    children: Vec<(String, usize, usize)>,
    vars: IndexMap<String, Value>,
}

/// Reads an inventory file: YAML when its name ends in `.yml`, `.yaml` or `.json`, else
/// INI. The hosts in file order, each with its groups and vars resolved.
pub fn parse(name: &str, text: &str) -> Result<Vec<FileHost>, Vec<InvError>> {
    let lower = name.to_ascii_lowercase();
    let g = if [".yml", ".yaml", ".json"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        parse_yaml(text)?
    } else {
        parse_ini(text)?
    };
    resolve(g)
}

/// Group vars and children applied: each host gets every group it is in (directly or
/// through children) and those groups' vars, its own vars winning, a child's over its
/// parent's.
fn resolve(mut g: Groups) -> Result<Vec<FileHost>, Vec<InvError>> {
    let mut errors = Vec::new();
    for (group, grp) in &g.groups {
        for (child, line, col) in &grp.children {
            if !g.groups.contains_key(child) {
                errors.push(err(
                    *line,
                    *col,
                    format!("group `{group}` has unknown child group `{child}`"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // The groups each group reaches, depth first, a cycle refused.
    fn reach(
        g: &Groups,
        name: &str,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), InvError> {
        if let Some(at) = path.iter().position(|p| p == name) {
            let cycle = path[at..].join(" → ");
            let (line, col) = g.groups[path.last().map(String::as_str).unwrap_or(name)]
                .children
                .iter()
                .find(|c| c.0 == name)
                .map(|c| (c.1, c.2))
                .unwrap_or((1, 1));
            return Err(err(
                line,
                col,
                format!("groups form a cycle: {cycle} → {name}"),
            ));
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
        path.push(name.to_owned());
        for (child, ..) in &g.groups[name].children {
            reach(g, child, path, out)?;
        }
        path.pop();
        Ok(())
    }
    let names: Vec<String> = g.groups.keys().cloned().collect();
    // Host → groups, in group order (a parent before its children).
    let mut member_of: IndexMap<String, Vec<String>> = IndexMap::new();
    for group in &names {
        let mut reached = Vec::new();
        if let Err(e) = reach(&g, group, &mut Vec::new(), &mut reached) {
            return Err(vec![e]);
        }
        for sub in &reached {
            for h in &g.groups[sub].hosts {
                let gs = member_of.entry(h.clone()).or_default();
                if !gs.contains(group) {
                    gs.push(group.clone());
                }
            }
        }
    }
    let mut hosts: Vec<FileHost> = Vec::with_capacity(g.hosts.len());
    for (name, mut host) in std::mem::take(&mut g.hosts) {
        let mut groups = member_of.shift_remove(&name).unwrap_or_default();
        // Every host is in `all`.
        if !groups.iter().any(|g| g == "all") {
            groups.insert(0, "all".to_owned());
        }
        // Vars of the groups in order (`all` first): a later (deeper) group overrides.
        let mut vars: IndexMap<String, Value> = IndexMap::new();
        let mut ordered: Vec<&String> = groups.iter().filter(|g| *g == "all").collect();
        ordered.extend(groups.iter().filter(|g| *g != "all"));
        for group in ordered {
            for (k, v) in &g.groups[group.as_str()].vars {
                vars.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in std::mem::take(&mut host.vars) {
            vars.insert(k, v);
        }
        let mut errors = Vec::new();
        let line = host.line;
        connection_vars(&mut host, &mut vars, |m| errors.push(err(line, 1, m)));
        if !errors.is_empty() {
            return Err(errors);
        }
        host.vars = vars;
        host.groups = groups.into_iter().filter(|g| g != "all").collect();
        hosts.push(host);
    }
    Ok(hosts)
}

/// `ansible_host`, `ansible_port`, `ansible_user` and `ansible_ssh_private_key_file`
/// taken out of the vars as the host's connection values.
fn connection_vars(
    host: &mut FileHost,
    vars: &mut IndexMap<String, Value>,
    mut fail: impl FnMut(String),
) {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    if let Some(v) = vars.shift_remove("ansible_host") {
        host.address = Some(text(v));
    }
    if let Some(v) = vars
        .shift_remove("ansible_port")
        .or_else(|| vars.shift_remove("ansible_ssh_port"))
    {
        match text(v.clone()).parse::<u16>() {
            Ok(p) if p > 0 => host.port = Some(p),
            _ => fail(format!(
                "host `{}`: `ansible_port` must be a port number from 1 to 65535, not `{}`",
                host.name,
                text(v)
            )),
        }
    }
    if let Some(v) = vars
        .shift_remove("ansible_user")
        .or_else(|| vars.shift_remove("ansible_ssh_user"))
    {
        host.user = Some(text(v));
    }
    if let Some(v) = vars.shift_remove("ansible_ssh_private_key_file") {
        host.identity_file = Some(text(v));
    }
}

/// Splits a line into words, quotes (`'…'`, `"…"`) kept together and removed; each word
/// with its 1-based column.
fn words(line: &str) -> Result<Vec<(String, usize)>, usize> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = None;
    let mut quote: Option<(char, usize)> = None;
    for (col, c) in line.chars().enumerate() {
        let col = col + 1;
        match (quote, c) {
            (Some((q, _)), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some((c, col));
                start.get_or_insert(col);
            }
            (None, c) if c.is_whitespace() => {
                if let Some(s) = start.take() {
                    out.push((std::mem::take(&mut cur), s));
                }
            }
            (None, '#') if start.is_none() => break,
            (None, c) => {
                cur.push(c);
                start.get_or_insert(col);
            }
        }
    }
    if let Some((_, col)) = quote {
        return Err(col);
    }
    if let Some(s) = start {
        out.push((cur, s));
    }
    Ok(out)
}

/// A value as Ansible's INI reads it: numbers and booleans as such, else text.
fn ini_value(text: &str) -> Value {
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    match text {
        "true" | "True" => Value::Bool(true),
        "false" | "False" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// The host names a pattern stands for: `web[1:3]` is web1, web2, web3; `db-[a:c]` is
/// db-a, db-b, db-c; `[01:10]` keeps the width.
pub fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_owned()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|c| open + c)
        .ok_or_else(|| format!("host range in `{pattern}` is not closed by `]`"))?;
    let (before, range, after) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let (from, to) = range
        .split_once(':')
        .ok_or_else(|| format!("host range `[{range}]` must be `[FROM:TO]`, such as `[1:20]`"))?;
    let rest = expand(after)?;
    let mut names = Vec::new();
    let mut push = |middle: String| {
        for r in &rest {
            names.push(format!("{before}{middle}{r}"));
        }
    };
    match (from.parse::<u64>(), to.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b && b - a < 100_000 => {
            let width = if from.starts_with('0') && from.len() > 1 {
                from.len()
            } else {
                0
            };
            for n in a..=b {
                push(format!("{n:0width$}"));
            }
        }
        _ => {
            let one = |s: &str| {
                let mut c = s.chars();
                match (c.next(), c.next()) {
                    (Some(ch), None) if ch.is_ascii_alphabetic() => Some(ch),
                    _ => None,
                }
            };
            match (one(from), one(to)) {
                (Some(a), Some(b)) if a <= b => {
                    for c in a..=b {
                        push(c.to_string());
                    }
                }
                _ => {
                    return Err(format!(
                        "host range `[{range}]` must go up from a number to a number, or a letter to a letter"
                    ));
                }
            }
        }
    }
    Ok(names)
}

fn is_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn parse_ini(text: &str) -> Result<Groups, Vec<InvError>> {
    enum Section {
        Hosts(String),
        Vars(String),
        Children(String),
    }
    let mut g = Groups::default();
    g.groups.insert("all".into(), Group::default());
    g.groups.insert("ungrouped".into(), Group::default());
    let mut section = Section::Hosts("ungrouped".into());
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.trim();
        let indent = raw.chars().take_while(|c| c.is_whitespace()).count();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[') {
            let Some(head) = head.split(']').next().filter(|_| head.contains(']')) else {
                errors.push(err(
                    line_no,
                    indent + 1,
                    "a section header `[...]` is not closed by `]`",
                ));
                continue;
            };
            let (name, kind) = match head.split_once(':') {
                Some((n, k)) => (n, Some(k)),
                None => (head, None),
            };
            if !is_group_name(name) {
                errors.push(err(
                    line_no,
                    indent + 2,
                    format!("`{name}` is not a group name (letters, digits, `_`, `-`, `.`)"),
                ));
                continue;
            }
            g.groups.entry(name.to_owned()).or_default();
            section = match kind {
                None => Section::Hosts(name.into()),
                Some("vars") => Section::Vars(name.into()),
                Some("children") => Section::Children(name.into()),
                Some(other) => {
                    errors.push(err(
                        line_no,
                        indent + 2 + name.len() + 1,
                        format!("unknown section `[{name}:{other}]`: a group's sections are `[{name}]`, `[{name}:vars]` and `[{name}:children]`"),
                    ));
                    Section::Vars(String::new())
                }
            };
            continue;
        }
        let ws = match words(raw) {
            Ok(w) => w,
            Err(col) => {
                errors.push(err(line_no, col, "a quoted value is not closed"));
                continue;
            }
        };
        if ws.is_empty() {
            continue;
        }
        match &section {
            Section::Vars(group) => {
                let Some((key, value)) = line.split_once('=') else {
                    errors.push(err(
                        line_no,
                        indent + 1,
                        format!("a `:vars` line is `NAME=VALUE`, not `{line}`"),
                    ));
                    continue;
                };
                if group.is_empty() {
                    continue;
                }
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(value);
                g.groups[group.as_str()]
                    .vars
                    .insert(key.trim().to_owned(), ini_value(value));
            }
            Section::Children(group) => {
                let (child, col) = &ws[0];
                if ws.len() > 1 || !is_group_name(child) {
                    errors.push(err(
                        line_no,
                        *col,
                        format!("a `:children` line names one group, not `{line}`"),
                    ));
                    continue;
                }
                g.groups[group.as_str()]
                    .children
                    .push((child.clone(), line_no, *col));
            }
            Section::Hosts(group) => {
                let (pattern, col) = &ws[0];
                let names = match expand(pattern) {
                    Ok(n) => n,
                    Err(e) => {
                        errors.push(err(line_no, *col, e));
                        continue;
                    }
                };
                let mut vars = IndexMap::new();
                for (w, c) in &ws[1..] {
                    match w.split_once('=') {
                        Some((k, v)) if !k.is_empty() => {
                            vars.insert(k.to_owned(), ini_value(v));
                        }
                        _ => errors.push(err(
                            line_no,
                            *c,
                            format!("after the host name come `NAME=VALUE` pairs, not `{w}`"),
                        )),
                    }
                }
                for name in names {
                    add_host(&mut g, group, &name, vars.clone(), line_no);
                }
            }
        }
    }
    // A host named in a group is not also `ungrouped`.
    let grouped: std::collections::HashSet<String> = g
        .groups
        .iter()
        .filter(|(n, _)| n.as_str() != "ungrouped")
        .flat_map(|(_, gr)| gr.hosts.iter().cloned())
        .collect();
    g.groups["ungrouped"].hosts.retain(|h| !grouped.contains(h));
    if errors.is_empty() {
        Ok(g)
    } else {
        Err(errors)
    }
}

fn add_host(g: &mut Groups, group: &str, name: &str, vars: IndexMap<String, Value>, line: usize) {
    let host = g.hosts.entry(name.to_owned()).or_insert_with(|| FileHost {
        name: name.to_owned(),
        line,
        ..FileHost::default()
    });
    host.vars.extend(vars);
    let members = &mut g.groups.entry(group.to_owned()).or_default().hosts;
    if !members.iter().any(|m| m == name) {
        members.push(name.to_owned());
    }
}

fn parse_yaml(text: &str) -> Result<Groups, Vec<InvError>> {
    let root = yaml::parse(text).map_err(|e| {
        vec![err(
            e.span.start.line as usize,
            e.span.start.col as usize + 1,
            e.message,
        )]
    })?;
    let mut g = Groups::default();
    g.groups.insert("all".into(), Group::default());
    let mut errors = Vec::new();
    let at = |n: &Node| (n.span.start.line as usize, n.span.start.col as usize + 1);
    match &root.value {
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                let name = k.as_str().unwrap_or_default();
                yaml_group(&mut g, name, k, v, &mut errors, 0);
            }
        }
        NodeValue::Scalar(Scalar::Null, _) => {}
        _ => {
            let (l, c) = at(&root);
            errors.push(err(
                l,
                c,
                "a YAML inventory is a mapping of groups (`all:`, `web:` ...)",
            ));
        }
    }
    if errors.is_empty() {
        Ok(g)
    } else {
        Err(errors)
    }
}

fn yaml_group(
    g: &mut Groups,
    name: &str,
    key: &Node,
    node: &Node,
    errors: &mut Vec<InvError>,
    depth: usize,
) {
    let at = |n: &Node| (n.span.start.line as usize, n.span.start.col as usize + 1);
    if !is_group_name(name) {
        let (l, c) = at(key);
        errors.push(err(l, c, format!("`{name}` is not a group name")));
        return;
    }
    g.groups.entry(name.to_owned()).or_default();
    let entries = match &node.value {
        NodeValue::Map(e) => e,
        NodeValue::Scalar(Scalar::Null, _) => return,
        _ => {
            let (l, c) = at(node);
            errors.push(err(
                l,
                c,
                format!("group `{name}` is a mapping of `hosts`, `vars` and `children`"),
            ));
            return;
        }
    };
    for (k, v) in entries {
        let field = k.as_str().unwrap_or_default();
        match field {
            "hosts" => match &v.value {
                NodeValue::Map(hosts) => {
                    for (hk, hv) in hosts {
                        let pattern = hk
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| hk.to_json().to_string());
                        let (l, c) = at(hk);
                        let vars = match &hv.value {
                            NodeValue::Scalar(Scalar::Null, _) => IndexMap::new(),
                            NodeValue::Map(_) => match hv.to_json() {
                                Value::Object(o) => o.into_iter().collect(),
                                _ => IndexMap::new(),
                            },
                            _ => {
                                let (l, c) = at(hv);
                                errors.push(err(
                                    l,
                                    c,
                                    format!("host `{pattern}` has a mapping of vars (or nothing)"),
                                ));
                                continue;
                            }
                        };
                        match expand(&pattern) {
                            Ok(names) => {
                                for n in names {
                                    add_host(g, name, &n, vars.clone(), l);
                                }
                            }
                            Err(e) => errors.push(err(l, c, e)),
                        }
                    }
                }
                NodeValue::Scalar(Scalar::Null, _) => {}
                _ => {
                    let (l, c) = at(v);
                    errors.push(err(
                        l,
                        c,
                        "`hosts` is a mapping of host names (to their vars)",
                    ));
                }
            },
            "vars" => match v.to_json() {
                Value::Object(o) => g.groups[name].vars.extend(o),
                Value::Null => {}
                _ => {
                    let (l, c) = at(v);
                    errors.push(err(l, c, "`vars` is a mapping of names to values"));
                }
            },
            "children" => match &v.value {
                NodeValue::Map(children) => {
                    if depth > 32 {
                        let (l, c) = at(v);
                        errors.push(err(l, c, "groups are nested too deeply"));
                        continue;
                    }
                    for (ck, cv) in children {
                        let child = ck.as_str().unwrap_or_default();
                        let (l, c) = at(ck);
                        g.groups[name].children.push((child.to_owned(), l, c));
                        yaml_group(g, child, ck, cv, errors, depth + 1);
                    }
                }
                NodeValue::Scalar(Scalar::Null, _) => {}
                _ => {
                    let (l, c) = at(v);
                    errors.push(err(l, c, "`children` is a mapping of groups"));
                }
            },
            other => {
                let (l, c) = at(k);
                errors.push(err(
                    l,
                    c,
                    format!("unknown field `{other}` in group `{name}`: a group has `hosts`, `vars` and `children`"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ini_inventory_has_groups_children_vars_and_ranges() {
        let ini = "\
# comment
bastion.example.com

[web]
web[1:2].example.com ansible_user=deploy
web3 ansible_host=10.0.0.13 ansible_port=2222 role=canary

[db]
db1 ansible_host='10.0.0.21'

[prod:children]
web
db

[prod:vars]
env=production
tier=1
";
        let hosts = parse("inv.ini", ini).unwrap();
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bastion.example.com",
                "web1.example.com",
                "web2.example.com",
                "web3",
                "db1"
            ]
        );
        let web3 = &hosts[3];
        assert_eq!(web3.address.as_deref(), Some("10.0.0.13"));
        assert_eq!(web3.port, Some(2222));
        assert_eq!(web3.groups, ["web", "prod"]);
        assert_eq!(web3.vars["role"], "canary");
        assert_eq!(web3.vars["env"], "production");
        assert_eq!(web3.vars["tier"], 1);
        assert_eq!(hosts[1].user.as_deref(), Some("deploy"));
        assert_eq!(hosts[4].address.as_deref(), Some("10.0.0.21"));
        assert_eq!(hosts[0].groups, ["ungrouped"]);
        assert_eq!(expand("n[08:10]").unwrap(), ["n08", "n09", "n10"]);
        assert_eq!(expand("db-[a:c]").unwrap(), ["db-a", "db-b", "db-c"]);
    }

    #[test]
    fn ini_problems_have_their_line_and_column() {
        let e = parse("inv.ini", "[web]\nweb1 port 22\n[web:hosts]\n").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (2, 6));
        assert!(e[0].message.contains("NAME=VALUE"), "{e:?}");
        let last = e.last().unwrap();
        assert_eq!(last.line, 3);
        assert!(last.message.contains("unknown section"), "{e:?}");
        let e = parse("inv.ini", "[web]\nweb1 ansible_port=http\n").unwrap_err();
        assert!(e[0].message.contains("port number"), "{e:?}");
        let e = parse("inv.ini", "[a:children]\nb\n[b:children]\na\n").unwrap_err();
        assert!(e[0].message.contains("cycle"), "{e:?}");
        let e = parse("inv.ini", "[a:children]\nnope\n").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (2, 1));
    }

    #[test]
    fn a_yaml_inventory_reads_as_ansible_writes_it() {
        let y = "\
all:
  vars: { ansible_user: ops }
  children:
    web:
      hosts:
        web1: { ansible_host: 127.0.0.2, ansible_port: 2201 }
        web2:
      vars: { role: front }
    db:
      hosts:
        db1:
";
        let hosts = parse("inv.yaml", y).unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0].address.as_deref(), Some("127.0.0.2"));
        assert_eq!(hosts[0].port, Some(2201));
        assert_eq!(hosts[0].user.as_deref(), Some("ops"));
        assert_eq!(hosts[1].vars["role"], "front");
        assert_eq!(hosts[2].groups, ["db"]);
        let e = parse("inv.yaml", "all:\n  hostz: {}\n").unwrap_err();
        assert_eq!((e[0].line, e[0].col), (2, 3));
        let e = parse("inv.yml", "all: [\n").unwrap_err();
        assert_eq!(e.len(), 1);
    }
}
