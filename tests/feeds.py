#!/usr/bin/env python3
"""Parses feeds with feedparser (a real feed reader) and prints what it read as JSON.

    target/pyenv/bin/python tests/feeds.py FILE...

For each file: {"file", "bozo", "bozo_exception", "version", "title", "link",
"entries": [{"title", "link", "id", "published", "updated", "summary", "summary_type",
"summary_text"}]}, where the dates are ISO 8601 in UTC as feedparser understood them (null
when it found none) and `summary_text` is the summary as a person reads it (an HTML
summary, as RSS descriptions are, unescaped).
tests/it/feeds.rs runs it (`scripts/test-tools.sh feedparser` installs feedparser).
"""

import html
import json
import sys
import time

import feedparser


def when(parsed):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed) if parsed else None


def text_of(detail):
    if not detail:
        return None
    value = detail.get("value")
    if detail.get("type") == "text/html" and value is not None:
        return html.unescape(value)
    return value


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    d = feedparser.parse(data)
    exc = d.get("bozo_exception")
    return {
        "file": path,
        "bozo": int(d.bozo),
        "bozo_exception": repr(exc) if exc else None,
        "version": d.get("version"),
        "title": d.feed.get("title"),
        "link": d.feed.get("link"),
        "entries": [
            {
                "title": e.get("title"),
                "link": e.get("link"),
                "id": e.get("id"),
                "published": when(e.get("published_parsed")),
                "updated": when(e.get("updated_parsed")),
                "summary": e.get("summary"),
                "summary_type": (e.get("summary_detail") or {}).get("type"),
                "summary_text": text_of(e.get("summary_detail")),
            }
            for e in d.entries
        ],
    }


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump([read(p) for p in paths], sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
