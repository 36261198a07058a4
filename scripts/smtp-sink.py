#!/usr/bin/env python3
"""SMTP sink for the notification tests and benches.

    target/pyenv/bin/python scripts/smtp-sink.py --port 0 --out mails.jsonl \
        [--refuse-first N] [--refuse-all]

An aiosmtpd server on 127.0.0.1 (port 0 picks a free one), no TLS; AUTH PLAIN/LOGIN is
offered without TLS and any credentials pass, but sending without AUTH works too.
Each accepted message is appended to --out as one JSON line (written and flushed
before the 250 reply goes out):

    {"mail_from", "rcpt_tos": [...], "subject", "headers": {lowercased: decoded value,
     last wins}, "text": text/plain part or null, "html": text/html part or null
     (both decoded, line ends as \n), "raw": whole message as str (CRLF, as sent),
     "auth_user": AUTH login or null}

--refuse-first N answers the first N messages (at the end of DATA) with
`451 4.3.0 try again later` without recording them; --refuse-all answers every RCPT
with `550 5.1.1 no such user`. Prints `ready PORT` once listening; SIGTERM/SIGINT stop
it cleanly (exit 0). Needs aiosmtpd: scripts/test-tools.sh aiosmtpd.
"""
import argparse
import email
import email.policy
import json
import logging
import signal
import socket
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def accept_any(server, session, envelope, mechanism, auth_data):
    # Any user name and password are fine.
    return AuthResult(success=True, auth_data=auth_data)


def to_text(value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def part_text(msg, subtype):
    """The decoded text/SUBTYPE body of msg (not an attachment), or None; CRLF -> LF."""
    try:
        part = msg.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        content = part.get_content()
    except Exception:  # malformed part: fall back to the raw payload
        try:
            part = next(p for p in msg.walk() if p.get_content_type() == "text/" + subtype)
            content = part.get_payload(decode=True) or b""
        except StopIteration:
            return None
    return to_text(content).replace("\r\n", "\n")


def record_envelope(envelope):
    """The envelope, the size and the Message-ID only (no MIME parsing: for benches)."""
    raw = bytes(envelope.original_content or b"")
    head = raw.split(b"\r\n\r\n", 1)[0]
    mid = None
    for h in head.split(b"\r\n"):
        if h[:11].lower() == b"message-id:":
            mid = h[11:].strip().decode("ascii", "replace")
    return {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
            "size": len(raw), "message_id": mid}


def record(envelope, session):
    raw = bytes(envelope.original_content or b"")
    line = {
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "subject": None,
        "headers": {},
        "text": None,
        "html": None,
        "raw": raw.decode("utf-8", "replace"),
        "auth_user": to_text(getattr(session.auth_data, "login", None)),
    }
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for name, value in msg.items():
            try:
                line["headers"][name.lower()] = str(value)
            except Exception:
                line["headers"][name.lower()] = to_text(msg.get_all(name, failobj=[""])[-1])
        line["subject"] = line["headers"].get("subject")
        line["text"] = part_text(msg, "plain")
        line["html"] = part_text(msg, "html")
    except Exception as err:  # keep the raw message even if it cannot be parsed
        line["parse_error"] = repr(err)
    return line


class Sink:
    """aiosmtpd handler; its hooks all run on the controller's one event loop thread."""

    def __init__(self, out, refuse_first, refuse_all, envelope_only=False):
        self.envelope_only = envelope_only
        self.out = out
        self.refuse_left = refuse_first
        self.refuse_all = refuse_all

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_all:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_left > 0:
            self.refuse_left -= 1
            return "451 4.3.0 try again later"
        line = record_envelope(envelope) if self.envelope_only else record(envelope, session)
        self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.out.flush()
        return "250 OK"


class SockController(Controller):
    """Controller serving on a socket bound beforehand, so port 0 works race-free."""

    def __init__(self, handler, sock, **kwargs):
        self.sock = sock
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self.sock)


def main():
    ap = argparse.ArgumentParser(description="SMTP sink writing JSON lines")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--out", required=True, help="JSON lines file (appended to)")
    ap.add_argument("--refuse-first", type=int, default=0, metavar="N")
    ap.add_argument("--refuse-all", action="store_true")
    ap.add_argument("--envelope-only", action="store_true",
                    help="record the envelope, size and Message-ID only (no MIME parsing)")
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # aiosmtpd itself sets the deprecated Session.login_data on AUTH and warns about it.
    logging.getLogger("mail.log").addFilter(
        lambda rec: "login_data is deprecated" not in rec.getMessage())
    out = open(args.out, "a", encoding="utf-8")

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then; without
    # it the multi-line EHLO reply waits ~40 ms for a delayed ACK on every connection.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    sock.setblocking(False)

    controller = SockController(
        Sink(out, args.refuse_first, args.refuse_all, args.envelope_only),
        sock,
        server_hostname="smtp-sink.localhost",  # no slow getfqdn() lookup
        auth_require_tls=False,
        auth_required=False,
        authenticator=accept_any,
        data_size_limit=64 * 1024 * 1024,
    )

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    controller.start()
    print("ready %d" % sock.getsockname()[1], flush=True)
    while not stop.wait(3600):
        pass
    controller.stop()
    out.close()


if __name__ == "__main__":
    main()
