#!/usr/bin/env python3
"""Local stand-in for Atlassian Statuspage's manage API (v1), for tests (stdlib only).

    python3 scripts/fake-statuspage.py --port 0 --out statuspage.jsonl \
        --page PAGE_ID --key KEY --components "API,Database" [--rate-interval 1.0]

Listens on 127.0.0.1 (port 0 picks a free one), HTTP/1.1 keep-alive, JSON bodies.
Every /v1 request needs `Authorization: OAuth KEY` (else 401). Rate limit: a request
arriving less than --rate-interval seconds (default 1.0; 0 turns it off) after the
previous accepted one gets 429 with `Retry-After: 1` and is not applied. (The real
service counts 1 request/s over a 60 s rolling window, so it allows short bursts; this
one is stricter on purpose.)

    GET   /v1/pages/{page}/components
    PATCH /v1/pages/{page}/components/{id}      {"component": {"status": ...}}
    POST  /v1/pages/{page}/incidents            {"incident": {"name": ..., ...}}  -> 201
    PATCH /v1/pages/{page}/incidents/{id}       {"incident": {...}}
    GET   /v1/pages/{page}/incidents[/{id}]     (list newest first)
    DELETE /v1/pages/{page}/incidents/{id}
    (PUT is taken like PATCH, as the real API does.)
    GET   /_state   (no auth, no rate limit, not logged):
          {"incidents", "components", "requests", "rejected", "unauthorized",
           "rate_limited"}; rejected = unauthorized + rate_limited

Every other request is appended to --out as one JSON line, written and flushed before
the answer goes out: {"method", "path", "status", "body": request JSON or null, "at"}.
Errors answer {"error": "..."}: 400 bad JSON, 401, 404, 422 invalid values, 429.
Prints `ready PORT` once listening; SIGTERM/SIGINT stop it (exit 0).
"""
import argparse
import json
import secrets
import signal
import string
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

COMPONENT_STATUSES = {"operational", "degraded_performance", "partial_outage",
                      "major_outage", "under_maintenance"}
REALTIME_STATUSES = ["investigating", "identified", "monitoring", "resolved", "postmortem"]
SCHEDULED_STATUSES = ["scheduled", "in_progress", "verifying", "completed"]
INCIDENT_STATUSES = set(REALTIME_STATUSES + SCHEDULED_STATUSES)
IMPACTS = {"none", "maintenance", "minor", "major", "critical"}
# Impact derived from the worst component status when there is no impact_override.
STATUS_IMPACT = {"major_outage": "critical", "partial_outage": "major",
                 "degraded_performance": "minor"}
IMPACT_RANK = ["none", "maintenance", "minor", "major", "critical"]
ID_CHARS = string.ascii_lowercase + string.digits


def new_id(n=12):
    return "".join(secrets.choice(ID_CHARS) for _ in range(n))


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class State:
    """All the page's data; every access holds self.lock."""

    def __init__(self, args):
        self.page = args.page
        self.key = args.key
        self.interval = args.rate_interval
        self.out = open(args.out, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.last_accepted = None  # monotonic time of the last request let through
        self.requests = self.unauthorized = self.rate_limited = 0
        self.shortlink_base = None
        self.components = {}  # id -> component, in position order
        names = [c.strip() for c in args.components.split(",") if c.strip()]
        stamp = now_iso()
        for pos, name in enumerate(names, 1):
            cid = new_id()
            self.components[cid] = {
                "id": cid, "page_id": self.page, "group_id": None, "created_at": stamp,
                "updated_at": stamp, "group": False, "name": name, "description": None,
                "position": pos, "status": "operational", "showcase": True,
                "only_show_if_degraded": False, "automation_email": None,
                "start_date": None,
            }
        self.incidents = []  # newest first
        self.by_id = {}  # incident id -> incident

    def log(self, method, path, status, body):
        self.requests += 1
        line = {"method": method, "path": path, "status": status, "body": body,
                "at": time.time()}
        self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.out.flush()

    def current(self, incs):
        """incs (one incident or a list) with their components list as they are now."""
        for inc in incs if isinstance(incs, list) else [incs]:
            inc["components"] = [dict(self.components[c]) for c in inc["_component_ids"]]
        return incs

    def snapshot(self):
        self.current(self.incidents)
        return {"incidents": self.incidents, "components": list(self.components.values()),
                "requests": self.requests, "rejected": self.unauthorized + self.rate_limited,
                "unauthorized": self.unauthorized, "rate_limited": self.rate_limited}

    # --- components -------------------------------------------------------------------

    def component(self, cid):
        comp = self.components.get(cid)
        if comp is None:
            raise ApiError(404, "Component not found")
        return comp

    def patch_component(self, cid, body):
        comp = self.component(cid)
        fields = body.get("component") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            raise ApiError(422, "component is missing")
        status = fields.get("status", comp["status"])
        if status not in COMPONENT_STATUSES:
            raise ApiError(422, "Status is not included in the list")
        for key in ("name", "description"):
            if key in fields and fields[key] is not None and not isinstance(fields[key], str):
                raise ApiError(422, "%s must be a string" % key)
        comp["status"] = status
        for key in ("name", "description", "showcase", "only_show_if_degraded"):
            if key in fields:
                comp[key] = fields[key]
        comp["updated_at"] = now_iso()
        return comp

    # --- incidents --------------------------------------------------------------------

    def incident(self, iid):
        inc = self.by_id.get(iid)
        if inc is None:
            raise ApiError(404, "Incident not found")
        return inc

    def check_incident_fields(self, fields, creating):
        """Validates an {"incident": {...}} body; raises ApiError before any change."""
        if not isinstance(fields, dict):
            raise ApiError(422, "incident is missing")
        if creating or "name" in fields:
            name = fields.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ApiError(422, "Name can't be blank")
        if "status" in fields and fields["status"] not in INCIDENT_STATUSES:
            raise ApiError(422, "Status is not included in the list")
        if fields.get("impact_override") not in IMPACTS | {None}:
            raise ApiError(422, "Impact override is not included in the list")
        if "body" in fields and fields["body"] is not None and not isinstance(fields["body"], str):
            raise ApiError(422, "Body must be a string")
        ids = fields.get("component_ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ApiError(422, "component_ids must be a list of ids")
            for cid in ids:
                if cid not in self.components:
                    raise ApiError(422, "Component %s not found" % cid)
        comps = fields.get("components")
        if comps is not None:
            if not isinstance(comps, dict):
                raise ApiError(422, "components must be an object of id: status")
            for cid, status in comps.items():
                if cid not in self.components:
                    raise ApiError(422, "Component %s not found" % cid)
                if status not in COMPONENT_STATUSES:
                    raise ApiError(422, "Component status %r is not included in the list" % status)
        for key in ("scheduled_for", "scheduled_until"):
            if fields.get(key) is not None and not isinstance(fields[key], str):
                raise ApiError(422, "%s must be an ISO 8601 time" % key)
        if fields.get("metadata") is not None and not isinstance(fields["metadata"], dict):
            raise ApiError(422, "metadata must be an object")

    def apply_components(self, inc, fields, stamp):
        """Sets component statuses from fields; returns affected_components or None."""
        changes = []
        for cid, status in (fields.get("components") or {}).items():
            comp = self.components[cid]
            changes.append({"code": cid, "name": comp["name"],
                            "old_status": comp["status"], "new_status": status})
            if comp["status"] != status:
                comp["status"] = status
                comp["updated_at"] = stamp
        ids = list(inc["_component_ids"])
        for cid in list(fields.get("component_ids") or []) + list(fields.get("components") or {}):
            if cid not in ids:
                ids.append(cid)
        inc["_component_ids"] = ids
        return {"components": changes} if changes else None

    def add_update(self, inc, body, affected, deliver, stamp):
        inc["incident_updates"].insert(0, {
            "id": new_id(), "incident_id": inc["id"], "status": inc["status"],
            "body": body or "", "created_at": stamp, "updated_at": stamp,
            "display_at": stamp, "affected_components": affected,
            "deliver_notifications": deliver, "custom_tweet": None, "tweet_id": None,
            "twitter_updated_at": None, "wants_twitter_update": False,
        })

    def refresh(self, inc, stamp):
        """Derived fields: components list, impact, monitoring_at/resolved_at."""
        self.current(inc)
        if inc["impact_override"]:
            inc["impact"] = inc["impact_override"]
        elif inc["scheduled_for"]:
            inc["impact"] = "maintenance"
        else:
            worst = "none"
            for comp in inc["components"]:
                imp = STATUS_IMPACT.get(comp["status"], "none")
                if IMPACT_RANK.index(imp) > IMPACT_RANK.index(worst):
                    worst = imp
            # An incident keeps its highest impact once components recover.
            if IMPACT_RANK.index(inc.get("impact") or "none") > IMPACT_RANK.index(worst):
                worst = inc["impact"]
            inc["impact"] = worst
        status = inc["status"]
        if status == "monitoring" and not inc["monitoring_at"]:
            inc["monitoring_at"] = stamp
        if status in ("resolved", "postmortem", "completed"):
            inc["resolved_at"] = inc["resolved_at"] or stamp
        else:
            inc["resolved_at"] = None
        inc["updated_at"] = stamp

    def set_fields(self, inc, fields):
        for key in ("name", "status", "impact_override", "scheduled_for", "scheduled_until",
                    "scheduled_remind_prior", "scheduled_auto_in_progress",
                    "scheduled_auto_completed", "metadata"):
            if key in fields:
                inc[key] = fields[key]

    def create_incident(self, body):
        fields = body.get("incident") if isinstance(body, dict) else None
        self.check_incident_fields(fields, creating=True)
        stamp = now_iso()
        iid = new_id()
        inc = {
            "id": iid, "name": None, "status": None, "impact": "none",
            "impact_override": None, "page_id": self.page, "created_at": stamp,
            "updated_at": stamp, "started_at": stamp, "resolved_at": None,
            "monitoring_at": None, "scheduled_for": None, "scheduled_until": None,
            "scheduled_remind_prior": False, "scheduled_auto_in_progress": False,
            "scheduled_auto_completed": False, "scheduled_reminded_at": None,
            "metadata": {}, "postmortem_body": None, "postmortem_published_at": None,
            "shortlink": "%s/%s" % (self.shortlink_base, new_id(7)),
            "components": [], "incident_updates": [], "_component_ids": [],
        }
        self.set_fields(inc, fields)
        if not inc["status"]:
            inc["status"] = "scheduled" if inc["scheduled_for"] else "investigating"
        affected = self.apply_components(inc, fields, stamp)
        if fields.get("body"):
            self.add_update(inc, fields["body"], affected,
                            fields.get("deliver_notifications", True), stamp)
        self.refresh(inc, stamp)
        self.incidents.insert(0, inc)
        self.by_id[iid] = inc
        return inc

    def patch_incident(self, iid, body):
        inc = self.incident(iid)
        fields = body.get("incident") if isinstance(body, dict) else None
        self.check_incident_fields(fields, creating=False)
        stamp = now_iso()
        old_status = inc["status"]
        self.set_fields(inc, fields)
        affected = self.apply_components(inc, fields, stamp)
        if fields.get("body") or inc["status"] != old_status:
            self.add_update(inc, fields.get("body"), affected,
                            fields.get("deliver_notifications", True), stamp)
        self.refresh(inc, stamp)
        return inc

    def delete_incident(self, iid):
        inc = self.incident(iid)
        self.incidents.remove(inc)
        del self.by_id[iid]
        return inc


def public(obj):
    """An object as the API shows it (without the private _fields)."""
    if isinstance(obj, list):
        return [public(o) for o in obj]
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not k.startswith("_")}
    return obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def version_string(self):
        return "fake-statuspage"

    def log_request(self, code="-", size="-"):
        pass

    def send_json(self, status, obj, extra_headers=()):
        data = json.dumps(obj, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra_headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def handle_any(self):
        arrived = time.monotonic()
        st = self.server.state
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            raw = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            raw = None
        body, bad_json = None, raw is None
        if raw and raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True

        if path == "/_state" and self.command == "GET":
            with st.lock:
                data = public(st.snapshot())
            self.send_json(200, data)
            return

        headers = []
        with st.lock:
            if (self.headers.get("Authorization") or "").strip() != "OAuth " + st.key:
                st.unauthorized += 1
                status, result = 401, {"error": "Could not authenticate"}
            elif (st.interval > 0 and st.last_accepted is not None
                  and arrived - st.last_accepted < st.interval):
                st.rate_limited += 1
                status, result = 429, {"error": "Rate limit exceeded"}
                headers = [("Retry-After", "1")]
            else:
                st.last_accepted = arrived
                try:
                    if bad_json:
                        raise ApiError(400, "Body is not valid JSON")
                    status, result = self.route(st, path, body)
                    result = public(result)
                except ApiError as err:
                    status, result = err.status, {"error": err.message}
            st.log(self.command, self.path, status, body)
        self.send_json(status, result, headers)

    def route(self, st, path, body):
        parts = path.strip("/").split("/")
        method = "PATCH" if self.command == "PUT" else self.command
        if len(parts) < 4 or parts[0] != "v1" or parts[1] != "pages":
            raise ApiError(404, "Not found")
        if parts[2] != st.page:
            raise ApiError(404, "Page not found")
        kind, rest = parts[3], parts[4:]
        if kind == "components":
            if not rest and method == "GET":
                return 200, list(st.components.values())
            if len(rest) == 1 and method == "GET":
                return 200, st.component(rest[0])
            if len(rest) == 1 and method == "PATCH":
                return 200, st.patch_component(rest[0], body)
        elif kind == "incidents":
            if not rest and method == "GET":
                return 200, st.current(st.incidents)
            if not rest and method == "POST":
                return 201, st.create_incident(body)
            if len(rest) == 1 and method == "GET":
                return 200, st.current(st.incident(rest[0]))
            if len(rest) == 1 and method == "PATCH":
                return 200, st.patch_incident(rest[0], body)
            if len(rest) == 1 and method == "DELETE":
                return 200, st.delete_incident(rest[0])
        raise ApiError(404, "Not found")

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser(description="fake Statuspage manage API")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--out", required=True, help="JSON lines request log (appended to)")
    ap.add_argument("--page", required=True, help="page id")
    ap.add_argument("--key", required=True, help="API key (Authorization: OAuth KEY)")
    ap.add_argument("--components", default="", help="comma-separated component names")
    ap.add_argument("--rate-interval", type=float, default=1.0, metavar="S",
                    help="min seconds between accepted requests (0: no limit)")
    args = ap.parse_args()

    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    server.state = State(args)
    server.state.shortlink_base = "http://127.0.0.1:%d/s" % port  # never a real host

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print("ready %d" % port, flush=True)
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    with server.state.lock:
        server.state.out.close()


if __name__ == "__main__":
    main()
