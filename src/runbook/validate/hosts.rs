//! Servers: the inventory (inline `hosts:` and the `inventory:` file), the `ssh:`
//! defaults, and what a host step (`on:`) runs on and in which waves.

use std::sync::Arc;

use super::*;
use crate::runbook::inventory;

/// What `on:` may always name.
pub const ALL: &str = "all";

/// Options the runner sets itself: a runbook cannot change them.
pub const RESERVED_OPTIONS: &[&str] = &[
    "batchmode",
    "stricthostkeychecking",
    "controlmaster",
    "controlpath",
    "controlpersist",
];

/// Fields `{{host.*}}` offers.
pub const HOST_FIELDS: &[&str] = &["name", "address", "port", "user", "vars", "groups"];

/// A value ssh reads as a word of its command line: not empty, no whitespace or control
/// characters, and not starting with `-` (it would be read as an option).
fn ssh_word(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('-') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An OpenSSH option name (`ServerAliveInterval`) and a value on one line.
fn check_options(cx: &mut Ctx, path: &FieldPath, options: &IndexMap<String, Text>) {
    for (k, v) in options {
        if RESERVED_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) {
            cx.error_key(
                path.key(k),
                format!("ssh option `{k}` is the runner's own (never prompting, checking host keys as `ssh.known_hosts` says, one connection per host): it cannot be set"),
            );
        } else if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
            cx.error_key(
                path.key(k),
                format!("`{k}` is not an OpenSSH option name (letters and digits, such as `ServerAliveInterval`)"),
            );
        } else if v.0.contains(['\n', '\r']) {
            cx.error(
                path.key(k),
                format!("the value of ssh option `{k}` must be on one line"),
            );
        }
    }
}

/// The `ssh:` defaults.
pub(super) fn ssh(cx: &mut Ctx, raw: Option<RawSsh>) -> Ssh {
    let Some(raw) = raw else {
        return Ssh::default();
    };
    let path = FieldPath::root().key("ssh");
    check_options(cx, &path.key("options"), &raw.options);
    if let Some(u) = &raw.user
        && !ssh_word(u)
    {
        cx.error(
            path.key("user"),
            format!("`{u}` is not a user name ssh can use"),
        );
    }
    if raw.port == Some(0) {
        cx.error(path.key("port"), "a port is from 1 to 65535");
    }
    Ssh {
        user: raw.user,
        port: raw.port,
        identity_file: raw.identity_file,
        known_hosts: raw.known_hosts.unwrap_or_default(),
        options: texts(Some(raw.options)),
    }
}

/// The inventory: the hosts written in `hosts:`, then those of the `inventory:` file (a
/// host in both is one host, in the groups of both, the runbook's values first).
pub(super) fn inventory(
    cx: &mut Ctx,
    raw: Option<IndexMap<String, Vec<RawHost>>>,
    file: Option<String>,
) -> Inventory {
    let mut inv = Inventory::default();
    let top = FieldPath::root().key("hosts");
    for (group, hosts) in raw.unwrap_or_default() {
        let gpath = top.key(&group);
        if group == ALL {
            cx.error_key(
                gpath.clone(),
                "`all` is every host: it cannot be a group of its own",
            );
            continue;
        }
        if !is_id(&group, true)
            && !group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            cx.error_key(
                gpath.clone(),
                format!("group name `{group}` must be letters, digits, `_`, `-` and `.`"),
            );
        }
        inv.groups.entry(group.clone()).or_default();
        for (i, h) in hosts.into_iter().enumerate() {
            let hpath = gpath.index(i);
            let line = cx.node(&hpath).map_or(0, |n| n.span.start.line);
            let host = match h {
                RawHost::Name(name) => Host {
                    address: name.clone(),
                    name,
                    port: None,
                    user: None,
                    identity_file: None,
                    options: IndexMap::new(),
                    vars: IndexMap::new(),
                    groups: Vec::new(),
                    origin: format!("line {line}"),
                },
                RawHost::Detail(d) => {
                    check_options(cx, &hpath.key("options"), &d.options);
                    if d.port == Some(0) {
                        cx.error(hpath.key("port"), "a port is from 1 to 65535");
                    }
                    if let Some(u) = &d.user
                        && !ssh_word(u)
                    {
                        cx.error(
                            hpath.key("user"),
                            format!("`{u}` is not a user name ssh can use"),
                        );
                    }
                    Host {
                        address: d.address.clone().unwrap_or_else(|| d.name.clone()),
                        name: d.name,
                        port: d.port,
                        user: d.user,
                        identity_file: d.identity_file,
                        options: texts(Some(d.options)),
                        vars: d.vars,
                        groups: Vec::new(),
                        origin: format!("line {line}"),
                    }
                }
            };
            let name_path = match cx.node(&hpath).map(|n| &n.value) {
                Some(NodeValue::Map(_)) => hpath.key("name"),
                _ => hpath.clone(),
            };
            if !ssh_word(&host.name) || host.name.contains(['/', ',']) {
                cx.error(
                    name_path,
                    format!(
                        "host name `{}` must have no spaces, `/` or `,` and not start with `-`",
                        host.name
                    ),
                );
                continue;
            }
            if !ssh_word(&host.address) {
                cx.error(
                    hpath.key("address"),
                    format!(
                        "host address `{}` must have no spaces and not start with `-`",
                        host.address
                    ),
                );
                continue;
            }
            add(&mut inv, &group, host);
        }
    }
    if let Some(file) = file {
        from_file(cx, &mut inv, &file);
    }
    for name in inv.groups.keys() {
        if inv.hosts.iter().any(|h| &h.name == name) {
            cx.error_key(
                top.key(name),
                format!("`{name}` is both a group and a host: `on: {name}` would be ambiguous"),
            );
        }
    }
    inv
}

/// Adds `host` to `group` (and to the inventory, once by name).
fn add(inv: &mut Inventory, group: &str, host: Host) -> usize {
    let ix = match inv.hosts.iter().position(|h| h.name == host.name) {
        Some(ix) => {
            let have = &mut inv.hosts[ix];
            let from_file = host.origin.contains(':');
            // The first definition's values win; the other fills what it left out.
            if have.port.is_none() {
                have.port = host.port;
            }
            if have.user.is_none() {
                have.user = host.user;
            }
            if have.identity_file.is_none() {
                have.identity_file = host.identity_file;
            }
            if have.address == have.name && host.address != host.name && from_file {
                have.address = host.address;
            }
            for (k, v) in host.options {
                have.options.entry(k).or_insert(v);
            }
            for (k, v) in host.vars {
                have.vars.entry(k).or_insert(v);
            }
            ix
        }
        None => {
            inv.hosts.push(host);
            inv.hosts.len() - 1
        }
    };
    let members = inv.groups.entry(group.to_owned()).or_default();
    if !members.contains(&ix) {
        members.push(ix);
    }
    if !inv.hosts[ix].groups.iter().any(|g| g == group) {
        inv.hosts[ix].groups.push(group.to_owned());
    }
    ix
}

/// The hosts of an Ansible inventory file; its problems are reported at their place in
/// that file.
fn from_file(cx: &mut Ctx, inv: &mut Inventory, file: &str) {
    let path = FieldPath::root().key("inventory");
    let text = match crate::input::read_limited(std::path::Path::new(file)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                cx.error(path, format!("inventory `{file}` is not UTF-8 text"));
                inv.unread = true;
                return;
            }
        },
        Err(e) => {
            cx.error(path, format!("inventory: {e}"));
            inv.unread = true;
            return;
        }
    };
    let hosts = match inventory::parse(file, &text) {
        Ok(h) => h,
        Err(errors) => {
            let shared = Arc::new((file.to_owned(), text));
            for e in errors {
                let pos = Pos::new(e.line, e.col.saturating_sub(1));
                let mut d = Diagnostic::at(FieldPath::root(), format!("inventory: {}", e.message))
                    .with_span(Span {
                        start: pos,
                        end: Pos::new(e.line, e.col),
                    });
                d.file = Some(shared.clone());
                cx.push(d);
            }
            inv.unread = true;
            return;
        }
    };
    for h in hosts {
        let bad = !ssh_word(&h.name)
            || h.name.contains(['/', ','])
            || h.address.as_deref().is_some_and(|a| !ssh_word(a))
            || h.user.as_deref().is_some_and(|u| !ssh_word(u));
        if bad {
            let shared = Arc::new((file.to_owned(), text.clone()));
            let pos = Pos::new(h.line, 0);
            let mut d = Diagnostic::at(
                FieldPath::root(),
                format!("inventory: host `{}` has a name, address or user ssh cannot use (spaces, or a leading `-`)", h.name),
            )
            .with_span(Span { start: pos, end: Pos::new(h.line, 1) });
            d.file = Some(shared);
            cx.push(d);
            continue;
        }
        let groups = if h.groups.is_empty() {
            vec!["ungrouped".to_owned()]
        } else {
            h.groups.clone()
        };
        let host = Host {
            address: h.address.unwrap_or_else(|| h.name.clone()),
            name: h.name,
            port: h.port,
            user: h.user,
            identity_file: h.identity_file,
            options: IndexMap::new(),
            vars: h.vars,
            groups: Vec::new(),
            origin: format!("{file}:{}", h.line),
        };
        for g in &groups {
            add(inv, g, host.clone());
        }
    }
}

/// The hosts a step's `on:` names, in the order named (a host once): groups, host names
/// and `all`.
pub(super) fn on_hosts(cx: &mut Ctx, path: &FieldPath, on: &RawOn, inv: &Inventory) -> Vec<usize> {
    let names = on.names();
    let mut out: Vec<usize> = Vec::new();
    let mut push = |ix: usize| {
        if !out.contains(&ix) {
            out.push(ix);
        }
    };
    let many = matches!(on, RawOn::Many(_));
    if names.is_empty() {
        cx.error(path.key("on"), "`on` names no group or host");
    }
    if inv.unread {
        return out;
    }
    for (i, name) in names.iter().enumerate() {
        let at = if many {
            path.key("on").index(i)
        } else {
            path.key("on")
        };
        if *name == ALL {
            if inv.hosts.is_empty() {
                cx.error(
                    at,
                    "`on: all` but the runbook has no hosts (`hosts:` or `inventory:`)",
                );
            }
            (0..inv.hosts.len()).for_each(&mut push);
        } else if let Some(members) = inv.groups.get(*name) {
            if members.is_empty() {
                cx.error(at, format!("group `{name}` has no hosts"));
            }
            members.iter().copied().for_each(&mut push);
        } else if let Some(ix) = inv.hosts.iter().position(|h| h.name == *name) {
            push(ix);
        } else {
            let mut known: Vec<&str> = inv.groups.keys().map(String::as_str).collect();
            known.extend(inv.hosts.iter().map(|h| h.name.as_str()));
            known.push(ALL);
            let label = did_you_mean(name, &known).or_else(|| {
                Some(if inv.hosts.is_empty() {
                    "the runbook has no hosts: define them in `hosts:` or `inventory:`".to_owned()
                } else {
                    format!(
                        "groups: {}",
                        inv.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            });
            cx.error(at, format!("`on` names unknown group or host `{name}`"))
                .label = label;
        }
    }
    out
}

/// The waves and gates of a step; every field of them needs `on:`, and the gates need
/// `waves`.
#[allow(clippy::too_many_arguments)]
pub(super) fn rollout(
    cx: &mut Ctx,
    path: &FieldPath,
    host_step: bool,
    hosts: usize,
    waves: Option<Vec<RawWave>>,
    between: Vec<Condition>,
    pause: Option<Duration>,
    approve: bool,
) -> Option<Box<Rollout>> {
    let written =
        |cx: &Ctx, f: &str| cx.written(&path.key(f)) && (f != "approve_between_waves" || approve);
    if !host_step {
        for f in [
            "waves",
            "between_waves",
            "pause_between_waves",
            "approve_between_waves",
        ] {
            if written(cx, f) {
                cx.error_key(
                    path.key(f),
                    format!("`{f}` is for host steps: give the step `on:`"),
                );
            }
        }
        return None;
    }
    let Some(raw) = waves else {
        for f in [
            "between_waves",
            "pause_between_waves",
            "approve_between_waves",
        ] {
            if written(cx, f) {
                cx.error_key(path.key(f), format!("`{f}` needs `waves`"));
            }
        }
        return None;
    };
    if raw.is_empty() {
        cx.error(
            path.key("waves"),
            "`waves` lists at least one wave (the last reaching `100%`)",
        );
    }
    let mut sizes = Vec::with_capacity(raw.len());
    // Counts go up among counts, shares among shares (how they compare to each other
    // depends on how many hosts a run has: equal reaches make one wave).
    let (mut last_count, mut last_share) = (0u64, 0.0f64);
    let mut last_reach = 0.0f64;
    for (i, w) in raw.iter().enumerate() {
        let p = path.key("waves").index(i);
        let size = match w {
            RawWave::Count(0) => {
                cx.error(p, "a wave reaches at least 1 host");
                continue;
            }
            RawWave::Count(n) => WaveSize::Count(*n),
            RawWave::Percent(t) => match t
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
            {
                Some(v) if v > 0.0 && v <= 100.0 => WaveSize::Percent(v),
                _ => {
                    cx.error(p, format!("a wave is a count of hosts or a percentage above 0% up to 100%, not `{t}`"));
                    continue;
                }
            },
        };
        let (reach, down) = match size {
            WaveSize::Count(n) => {
                let down = n < last_count;
                last_count = n;
                ((n as f64 / hosts.max(1) as f64 * 100.0).min(100.0), down)
            }
            WaveSize::Percent(v) => {
                let down = v < last_share;
                last_share = v;
                (v, down)
            }
        };
        if down {
            cx.error(p, "each wave reaches at least as many hosts as the one before (waves count the hosts done by their end)");
        }
        last_reach = last_reach.max(reach);
        sizes.push(size);
    }
    if !raw.is_empty() && last_reach < 100.0 && hosts > 0 {
        cx.error(
            path.key("waves").index(raw.len() - 1),
            format!("the last wave must reach every host (`100%`, or {hosts}), or some hosts would never run"),
        );
    }
    Some(Box::new(Rollout {
        waves: sizes,
        between_waves: between,
        pause_between_waves: pause,
        approve_between_waves: approve,
    }))
}
