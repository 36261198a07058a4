//! The history feeds: `/history.atom` (RFC 4287) and `/history.rss` (RSS 2.0), one entry
//! per public update, newest first. Every piece of text goes through [`escape`].

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::api::{base_url, maintenance_url, path_segment};
use super::model::{Maintenance, Page, Update};
use super::snapshot::{Asset, SHORT, Snapshot};

const ATOM: &str = "application/atom+xml; charset=utf-8";
const RSS: &str = "application/rss+xml; charset=utf-8";

/// Entries per feed.
const LIMIT: usize = 100;

/// Adds both feeds of `page` to `snap`.
pub fn render(page: &Page, snap: &mut Snapshot) {
    let entries = entries(page);
    snap.insert(
        "/history.atom",
        Asset::new(ATOM, atom(page, &entries), page.updated_ms, SHORT),
    );
    snap.insert(
        "/history.rss",
        Asset::new(RSS, rss(page, &entries), page.updated_ms, SHORT),
    );
}

/// One public update, as both feeds show it (text not yet escaped).
struct Entry {
    title: String,
    link: String,
    /// Stable and unique: the maintenance's page with the update's id as fragment.
    id: String,
    at_ms: i64,
    body: String,
}

fn entries(page: &Page) -> Vec<Entry> {
    page.all_updates()
        .into_iter()
        .take(LIMIT)
        .map(|(m, u)| entry(page, m, u))
        .collect()
}

fn entry(page: &Page, m: &Maintenance, u: &Update) -> Entry {
    let incident = m
        .incident
        .as_deref()
        .filter(|_| u.incident)
        .and_then(|id| page.incidents.iter().find(|i| i.id == id));
    let name = incident.map_or(m.title.as_str(), |i| i.name.as_str());
    let link = maintenance_url(page, &m.id);
    Entry {
        // A maintenance's last word is titled by how it ended ("Rolled back"), not by
        // the Statuspage status it leaves (completed); an incident's by its status.
        title: format!(
            "{name}: {}",
            match crate::status::model::Outcome::of_update(&u.kind) {
                Some(o) if !u.incident => o.label().to_owned(),
                _ => status_label(&u.status),
            }
        ),
        id: format!("{link}#{}", path_segment(&u.id)),
        link,
        at_ms: u.at_ms,
        body: u.body.clone(),
    }
}

/// How a feed names a Statuspage status: `in_progress` is "In progress".
fn status_label(status: &str) -> String {
    let words = status.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => "Update".into(),
    }
}

/// `s` as XML character data or attribute value: markup characters escaped, characters
/// XML 1.0 does not allow at all (control characters) left out.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Plain text as HTML text (before [`escape`] makes it XML): what RSS readers expect in a
/// description.
fn html_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms.max(0)).unwrap_or_default()
}

/// RFC 3339, as Atom's date constructs want it.
fn rfc3339(ms: i64) -> String {
    time(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// RFC 2822 (RFC 822 with four-digit years), as RSS wants it.
fn rfc2822(ms: i64) -> String {
    time(ms).format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn atom(page: &Page, entries: &[Entry]) -> String {
    let base = base_url(page);
    let name = escape(&page.info.name);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en\">\n");
    let _ = writeln!(x, "  <id>{}</id>", escape(&format!("{base}/history.atom")));
    let _ = writeln!(x, "  <title>{name} history</title>");
    let _ = writeln!(x, "  <updated>{}</updated>", rfc3339(page.updated_ms));
    let _ = writeln!(x, "  <author><name>{name}</name></author>");
    let _ = writeln!(
        x,
        "  <link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>",
        escape(&format!("{base}/history.atom"))
    );
    let _ = writeln!(
        x,
        "  <link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
        escape(&format!("{base}/"))
    );
    x.push_str("  <generator>runbook</generator>\n");
    for e in entries {
        x.push_str("  <entry>\n");
        let _ = writeln!(x, "    <id>{}</id>", escape(&e.id));
        let _ = writeln!(x, "    <title type=\"text\">{}</title>", escape(&e.title));
        let _ = writeln!(
            x,
            "    <link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
            escape(&e.link)
        );
        let _ = writeln!(x, "    <published>{}</published>", rfc3339(e.at_ms));
        let _ = writeln!(x, "    <updated>{}</updated>", rfc3339(e.at_ms));
        let _ = writeln!(
            x,
            "    <summary type=\"text\">{}</summary>",
            escape(&e.body)
        );
        x.push_str("  </entry>\n");
    }
    x.push_str("</feed>\n");
    x
}

fn rss(page: &Page, entries: &[Entry]) -> String {
    let base = base_url(page);
    let name = escape(&page.info.name);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str("<rss version=\"2.0\" xmlns:atom=\"http://www.w3.org/2005/Atom\">\n");
    x.push_str("  <channel>\n");
    let _ = writeln!(x, "    <title>{name} history</title>");
    let _ = writeln!(x, "    <link>{}</link>", escape(&format!("{base}/")));
    let about = format!("Maintenance and incident updates of {}", page.info.name);
    let _ = writeln!(
        x,
        "    <description>{}</description>",
        escape(&html_text(&about))
    );
    x.push_str("    <language>en</language>\n");
    let _ = writeln!(
        x,
        "    <lastBuildDate>{}</lastBuildDate>",
        rfc2822(page.updated_ms)
    );
    let _ = writeln!(
        x,
        "    <atom:link href=\"{}\" rel=\"self\" type=\"application/rss+xml\"/>",
        escape(&format!("{base}/history.rss"))
    );
    x.push_str("    <generator>runbook</generator>\n");
    for e in entries {
        x.push_str("    <item>\n");
        let _ = writeln!(x, "      <title>{}</title>", escape(&e.title));
        let _ = writeln!(x, "      <link>{}</link>", escape(&e.link));
        let _ = writeln!(
            x,
            "      <guid isPermaLink=\"false\">{}</guid>",
            escape(&e.id)
        );
        let _ = writeln!(x, "      <pubDate>{}</pubDate>", rfc2822(e.at_ms));
        // RSS readers take a description as HTML: the text is escaped as HTML first, so
        // that they show it as written.
        let _ = writeln!(
            x,
            "      <description>{}</description>",
            escape(&html_text(&e.body))
        );
        x.push_str("    </item>\n");
    }
    x.push_str("  </channel>\n");
    x.push_str("</rss>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::api::tests::{
        MINUTE, busy_page, empty_page, info, running, scheduled, t0, update,
    };
    use crate::status::model::{NoticeEvent, NoticeRecorded, Stream, project};

    fn rendered(page: &Page) -> (String, String) {
        let mut snap = Snapshot::default();
        render(page, &mut snap);
        assert_eq!(snap.assets.len(), 2);
        let body = |path: &str, content_type: &str| {
            let asset = snap.get(path).unwrap_or_else(|| panic!("{path} missing"));
            assert_eq!(asset.content_type, content_type);
            assert_eq!(asset.cache_control, SHORT);
            assert_eq!(
                asset.last_modified,
                crate::status::snapshot::http_date(page.updated_ms)
            );
            String::from_utf8(asset.body.to_vec()).expect("UTF-8")
        };
        (
            body("/history.atom", "application/atom+xml; charset=utf-8"),
            body("/history.rss", "application/rss+xml; charset=utf-8"),
        )
    }

    /// Checks that `x` is well-formed XML as these feeds write it (declaration, elements,
    /// attributes in double quotes, the five predefined entities and character
    /// references), and returns its root element's name.
    fn well_formed(x: &str) -> Result<String, String> {
        fn entities(s: &str) -> Result<(), String> {
            let mut rest = s;
            while let Some(i) = rest.find('&') {
                rest = &rest[i + 1..];
                let end = rest
                    .find(';')
                    .ok_or(format!("unterminated entity in {s:?}"))?;
                let name = &rest[..end];
                let numeric = name
                    .strip_prefix('#')
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                if !numeric && !matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") {
                    return Err(format!("bad entity &{name}; in {s:?}"));
                }
            }
            if s.chars()
                .any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
            {
                return Err(format!("control character in {s:?}"));
            }
            Ok(())
        }
        let rest = x
            .strip_prefix("<?xml version=\"1.0\" encoding=\"utf-8\"?>")
            .ok_or("no XML declaration")?;
        let mut stack: Vec<&str> = Vec::new();
        let mut root: Option<String> = None;
        let mut rest = rest;
        loop {
            let Some(lt) = rest.find('<') else {
                if !rest.trim().is_empty() {
                    return Err(format!("text after the root: {rest:?}"));
                }
                break;
            };
            let text = &rest[..lt];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            if text.contains('>') {
                return Err(format!("raw > in text {text:?}"));
            }
            entities(text)?;
            rest = &rest[lt..];
            let gt = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = &tag[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == ':') {
                return Err(format!("bad element name {name:?}"));
            }
            // Attributes: name="value", separated by whitespace.
            let mut attrs = tag[name_end..].trim();
            while !attrs.is_empty() {
                let eq = attrs
                    .find("=\"")
                    .ok_or(format!("bad attribute in <{tag}>"))?;
                let attr = &attrs[..eq];
                if attr.is_empty() || !attr.chars().all(|c| c.is_alphanumeric() || c == ':') {
                    return Err(format!("bad attribute name {attr:?}"));
                }
                let value_and_rest = &attrs[eq + 2..];
                let close = value_and_rest.find('"').ok_or("unterminated attribute")?;
                let value = &value_and_rest[..close];
                if value.contains('<') {
                    return Err(format!("< in attribute {value:?}"));
                }
                entities(value)?;
                attrs = value_and_rest[close + 1..].trim_start();
                if !attrs.is_empty() && value_and_rest[close + 1..] == *attrs {
                    return Err(format!("attributes not separated in <{tag}>"));
                }
            }
            if stack.is_empty() {
                if root.is_some() {
                    return Err("two roots".into());
                }
                root = Some(name.to_owned());
            }
            if !empty {
                stack.push(name);
            }
        }
        if let Some(open) = stack.pop() {
            return Err(format!("<{open}> never closed"));
        }
        root.ok_or("no root".into())
    }

    /// The text of each `<tag ...>` element, in order, with entities decoded once.
    fn texts(x: &str, tag: &str) -> Vec<String> {
        let open = format!("<{tag}");
        let close = format!("</{tag}>");
        let mut out = Vec::new();
        let mut rest = x;
        while let Some(i) = rest.find(&open) {
            rest = &rest[i + open.len()..];
            if !rest.starts_with(['>', ' ']) {
                continue;
            }
            let start = rest.find('>').unwrap() + 1;
            let end = rest.find(&close).unwrap();
            out.push(unescape(&rest[start..end]));
            rest = &rest[end..];
        }
        out
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn checker_rejects_what_it_should() {
        let decl = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";
        assert_eq!(
            well_formed(&format!("{decl}<a><b x=\"1\"/>t&amp;</a>")),
            Ok("a".into())
        );
        for bad in [
            "<a><b></a>",
            "<a>x & y</a>",
            "<a>x<script>y</a>",
            "<a x=\"<\"></a>",
            "<a></a><b></b>",
            "<a>&nbsp;</a>",
            "<a>\u{1}</a>",
        ] {
            assert!(well_formed(&format!("{decl}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn both_feeds_list_every_update_newest_first() {
        let page = busy_page("Database upgrade", "Migrating.");
        let (atom, rss) = rendered(&page);
        assert_eq!(well_formed(&atom), Ok("feed".into()));
        assert_eq!(well_formed(&rss), Ok("rss".into()));

        let titles = [
            "Database upgrade: In progress",
            "Database upgrade: In progress",
            "Next upgrade: Scheduled",
            "Database upgrade: Scheduled",
            "Problem during maintenance: Old upgrade: Investigating",
            "Old upgrade: In progress",
        ];
        assert_eq!(page.all_updates().len(), titles.len());
        // The feed's own title comes first.
        let atom_titles = texts(&atom, "title");
        assert_eq!(atom_titles[0], "Acme Cloud history");
        assert_eq!(atom_titles[1..], titles);
        let rss_titles = texts(&rss, "title");
        assert_eq!(rss_titles[0], "Acme Cloud history");
        assert_eq!(rss_titles[1..], titles);

        let summaries = texts(&atom, "summary");
        assert_eq!(summaries[0], "Migrating.");
        assert_eq!(summaries[4], "We are looking into it.");
        assert_eq!(texts(&rss, "description")[1], "Migrating.");

        // Ids: stable, unique, and the link is the maintenance's page.
        let ids = texts(&atom, "id");
        assert_eq!(ids[0], "https://status.example.com/history.atom");
        assert_eq!(
            ids[1],
            "https://status.example.com/maintenances/maint-1#run-1-5"
        );
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        let guids = texts(&rss, "guid");
        assert_eq!(guids, ids[1..]);
        assert!(rss.contains("<guid isPermaLink=\"false\">"));
        assert!(atom.contains(
            "<link rel=\"alternate\" type=\"text/html\" href=\"https://status.example.com/maintenances/maint-1\"/>"
        ));
        assert!(atom.contains(
            "<link rel=\"alternate\" type=\"text/html\" href=\"https://status.example.com/maintenances/run-0\"/>"
        ));
        assert_eq!(
            texts(&rss, "link")[1],
            "https://status.example.com/maintenances/maint-1"
        );
        assert!(rss.contains(
            "<atom:link href=\"https://status.example.com/history.rss\" rel=\"self\" type=\"application/rss+xml\"/>"
        ));

        // Dates: RFC 3339 in Atom, RFC 2822 in RSS.
        assert_eq!(texts(&atom, "updated")[1], "2026-11-24T20:00:04Z");
        assert_eq!(texts(&atom, "published")[0], "2026-11-24T20:00:04Z");
        assert_eq!(texts(&rss, "pubDate")[0], "Tue, 24 Nov 2026 20:00:04 +0000");
        assert_eq!(texts(&atom, "updated")[0], rfc3339(page.updated_ms));
        assert_eq!(texts(&rss, "lastBuildDate")[0], rfc2822(page.updated_ms));
    }

    #[test]
    fn a_rolled_back_run_is_titled_rolled_back_not_completed() {
        use crate::engine::event::{Event, Recorded};
        let Stream::Run { id, mut events } = running("Database upgrade", "Migrating.") else {
            unreachable!()
        };
        let at = t0() + 10 * MINUTE;
        let rolled_back = update("rolled_back", "completed", "Put back as it was.", None);
        events.push(Recorded {
            seq: 6,
            at_ms: at,
            event: Event::Published(rolled_back),
        });
        let page = project(info("Acme Cloud"), &[Stream::Run { id, events }], at);
        let (atom, rss) = rendered(&page);
        assert_eq!(texts(&atom, "title")[1], "Database upgrade: Rolled back");
        assert_eq!(texts(&rss, "title")[1], "Database upgrade: Rolled back");
        assert!(!atom.contains("Database upgrade: Completed"));
    }

    #[test]
    fn an_empty_page_gives_valid_feeds() {
        let (atom, rss) = rendered(&empty_page());
        assert_eq!(well_formed(&atom), Ok("feed".into()));
        assert_eq!(well_formed(&rss), Ok("rss".into()));
        assert!(!atom.contains("<entry>"));
        assert!(!rss.contains("<item>"));
        // Never 1970: a page with nothing on it is as of now.
        let now = empty_page().now_ms;
        assert_eq!(texts(&atom, "updated"), [rfc3339(now)]);
        assert_eq!(
            texts(&atom, "id"),
            ["https://status.example.com/history.atom"]
        );
        assert!(atom.contains("<author><name>Acme Cloud</name></author>"));
        assert!(atom.contains(
            "<link rel=\"self\" type=\"application/atom+xml\" href=\"https://status.example.com/history.atom\"/>"
        ));
        assert!(atom.contains(
            "<link rel=\"alternate\" type=\"text/html\" href=\"https://status.example.com/\"/>"
        ));
        assert_eq!(texts(&rss, "link"), ["https://status.example.com/"]);
        assert_eq!(texts(&rss, "description").len(), 1);
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let nasty = "<script>alert(\"x\")</script> & 'quotes' {{title}} \u{1}\u{2603}";
        let clean = nasty.replace('\u{1}', "");
        let streams = [running(nasty, nasty)];
        let mut page = project(info(nasty), &streams, t0() + MINUTE);
        page.info.url = "https://status.example.com/a&b".into();
        let (atom, rss) = rendered(&page);
        assert_eq!(well_formed(&atom), Ok("feed".into()));
        assert_eq!(well_formed(&rss), Ok("rss".into()));
        for feed in [&atom, &rss] {
            assert!(!feed.contains("<script>"), "{feed}");
            assert!(!feed.contains('\u{1}'));
            assert!(feed.contains("{{title}}"));
            assert!(feed.contains("a&amp;b/maintenances/run-1"));
        }
        assert!(atom.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &apos;quotes&apos;"
        ));
        // Titles are plain text; Atom says so of the summary too.
        assert_eq!(texts(&atom, "title")[0], format!("{clean} history"));
        assert_eq!(texts(&atom, "title")[1], format!("{clean}: In progress"));
        assert_eq!(texts(&atom, "summary")[0], clean);
        assert_eq!(texts(&rss, "title")[1], format!("{clean}: In progress"));
        assert!(texts(&rss, "description")[0].contains("of &lt;script&gt;"));
        // An RSS description is HTML: decoded once it is the text escaped as HTML,
        // decoded twice the text itself.
        let description = &texts(&rss, "description")[1];
        assert!(description.starts_with("&lt;script&gt;"), "{description}");
        assert_eq!(unescape(&description.replace("&#39;", "'")), clean);
    }

    #[test]
    fn incident_updates_are_titled_by_the_incident() {
        let page = busy_page("Database upgrade", "Migrating.");
        let (atom, _) = rendered(&page);
        let titles = texts(&atom, "title");
        assert!(
            titles.contains(&"Problem during maintenance: Old upgrade: Investigating".to_owned())
        );
    }

    #[test]
    fn at_most_a_hundred_entries() {
        let Stream::Notice { id, mut events } = scheduled("maint-1", "Upgrade", t0(), "Planned.")
        else {
            unreachable!()
        };
        // After the announcement (updates before it show as of it).
        let at = t0() - 60 * MINUTE;
        for seq in 3..150 {
            let u = update("manual", "scheduled", &format!("Note {seq}."), None);
            events.push(NoticeRecorded {
                seq,
                at_ms: at + seq * 1000,
                event: NoticeEvent::Published(u),
            });
        }
        let page = project(info("Acme Cloud"), &[Stream::Notice { id, events }], t0());
        let (atom, rss) = rendered(&page);
        assert_eq!(atom.matches("<entry>").count(), 100);
        assert_eq!(rss.matches("<item>").count(), 100);
        assert_eq!(texts(&atom, "summary")[0], "Note 149.");
        assert_eq!(texts(&atom, "summary")[99], "Note 50.");
    }

    #[test]
    fn labels() {
        assert_eq!(status_label("in_progress"), "In progress");
        assert_eq!(status_label("verifying"), "Verifying");
        assert_eq!(status_label("resolved"), "Resolved");
        assert_eq!(status_label(""), "Update");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(escape("a\u{0}b\u{FFFF}\tc"), "ab\tc");
        assert_eq!(html_text("<'&\">"), "&lt;&#39;&amp;&quot;&gt;");
    }
}
