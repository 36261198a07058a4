#!/usr/bin/env python3
"""HTTP webhook sink for the notification tests and benches (stdlib only).

    python3 scripts/webhook-sink.py --port 0 --out hooks.jsonl [--status CODE] \
        [--fail-first N] [--hang-first N] [--hang-seconds S] [--delay-ms MS]

Listens on 127.0.0.1 (port 0 picks a free one), HTTP/1.1 with keep-alive. Every POST
(any path) is appended to --out as one JSON line, written and flushed before the
answer goes out:

    {"path", "headers": {lowercased: value, last wins}, "body": str (UTF-8, bad bytes
     replaced), "status": the status answered, "n": arrival number from 1, "at": time()}

Request n (counting every POST from 1) is answered:
  n <= --hang-first:  after sleeping --hang-seconds (default 60), 200 (recorded on
                      arrival, before the sleep, so the line is there while it hangs)
  n <= --fail-first:  500
  otherwise:          --status (default 200)
each with the body `ok` (`fail` for 500). Other methods get 405 and are not recorded.
Prints `ready PORT` once listening; SIGTERM/SIGINT stop it (exit 0).
"""
import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink:
    def __init__(self, args):
        self.args = args
        self.out = open(args.out, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.count = 0

    def take(self, line):
        """Numbers the request, picks its answer and records it; returns (status, hang)."""
        a = self.args
        with self.lock:
            self.count += 1
            n = self.count
            if n <= a.hang_first:
                status, hang = 200, a.hang_seconds
            elif n <= a.fail_first:
                status, hang = 500, 0
            else:
                status, hang = a.status, 0
            line.update(status=status, n=n, at=time.time())
            self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.out.flush()
        return status, hang


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def version_string(self):
        return "webhook-sink"

    def log_request(self, code="-", size="-"):
        pass  # no per-request line; errors still go to stderr

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def answer(self, status, body):
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. on a hang)

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.answer(400, "bad body")
            return
        line = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        status, hang = self.server.sink.take(line)
        if hang:
            time.sleep(hang)
        elif self.server.sink.args.delay_ms:
            time.sleep(self.server.sink.args.delay_ms / 1000.0)
        self.answer(status, "fail" if status == 500 else "ok")

    def not_allowed(self):
        try:
            self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
        self.answer(405, "only POST")

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = not_allowed


def main():
    ap = argparse.ArgumentParser(description="webhook sink writing JSON lines")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--out", required=True, help="JSON lines file (appended to)")
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--fail-first", type=int, default=0, metavar="N")
    ap.add_argument("--hang-first", type=int, default=0, metavar="N")
    ap.add_argument("--hang-seconds", type=float, default=60.0, metavar="S")
    ap.add_argument("--delay-ms", type=float, default=0.0, metavar="MS",
                    help="every other answer waits this long (a slow receiver)")
    args = ap.parse_args()

    ThreadingHTTPServer.request_queue_size = 128  # bursts of new connections
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True  # hanging requests do not hold up exit
    server.sink = Sink(args)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever in a thread: shutdown() must not be called from its own thread.
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print("ready %d" % server.server_address[1], flush=True)
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    with server.sink.lock:
        server.sink.out.close()


if __name__ == "__main__":
    main()
