#!/usr/bin/python3
"""A scriptable SMTP server for Mailroom's tests, on aiosmtpd (Debian's
python3-aiosmtpd; run it with /usr/bin/python3).

  smtp_server.py --port P --record messages.jsonl [--script script.json]
                 [--tls-cert cert.pem --tls-key key.pem] [--auth user:password]

With --tls-cert the server offers STARTTLS; with --auth it requires AUTH
(PLAIN or LOGIN, after STARTTLS) with that user and password.

Every accepted message is appended to the record file as one JSON line:
{"time", "mail_from", "rcpt_tos", "message_id", "subject", "data_b64", "session",
 "helo", "tls", "auth", "answers_pending"}.

The script (re-read on every command, so a test may change it while the
server runs) says how to answer, by recipient address:
  {"rcpt": {"bad@example.com": ["550 5.1.1 User unknown"],
            "slow@example.com": ["451 4.3.0 Try later", "451 4.3.0 Try later", "250 OK"]},
   "data": {"flaky@example.com": ["421 close", "250 OK"]}}
  {"pipelining": true}
makes EHLO offer PIPELINING (aiosmtpd reads pipelined commands either way).
  {"data_delay": 0.3}
delays every answer to the end of DATA by that many seconds; each record
then carries "answers_pending": how many messages (this one included) were
waiting for their answer at once.
A list is consumed one entry per attempt; its last entry then repeats.
"rcpt" answers RCPT TO for that address; "data" answers the end of DATA of
a message carrying that address. "421 close" sends 421 and drops the
connection (a server going away mid-session).
"""
import argparse
import asyncio
import base64
import email.parser
import email.policy
import json
import os
import signal
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult


class Scripted:
    def __init__(self, record, script):
        self.record = open(record, "a", buffering=1)
        self.script_path = script
        self.attempts = {}
        self.sessions = 0
        self.pending = 0  # messages whose end of DATA awaits its (delayed) answer

    def script(self):
        if not self.script_path or not os.path.exists(self.script_path):
            return {}
        with open(self.script_path) as f:
            return json.load(f)

    def answer(self, kind, address, default):
        replies = self.script().get(kind, {}).get(address)
        if not replies:
            return default
        key = (kind, address)
        n = self.attempts.get(key, 0)
        self.attempts[key] = n + 1
        return replies[min(n, len(replies) - 1)]

    def close_after(self, server, reply):
        if reply.endswith(" close"):
            asyncio.get_event_loop().call_later(0.01, server.transport.close)
            return reply[: -len(" close")] + " 4.3.2 Service closing transmission channel"
        return reply

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not hasattr(session, "number"):
            self.sessions += 1
            session.number = self.sessions
        if self.script().get("pipelining") and responses:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.close_after(server, self.answer("rcpt", address.lower(), "250 2.1.5 OK"))
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        delay = self.script().get("data_delay", 0)
        self.pending += 1
        pending = self.pending
        if delay:
            await asyncio.sleep(delay / 2)
            pending = max(pending, self.pending)
            await asyncio.sleep(delay / 2)
        self.pending -= 1
        reply = "250 2.0.0 OK queued"
        for rcpt in envelope.rcpt_tos:
            scripted = self.answer("data", rcpt.lower(), None)
            if scripted and not reply.startswith(("4", "5")):
                reply = scripted
        reply = self.close_after(server, reply)
        if reply.startswith("2"):
            headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
                envelope.original_content or b"")
            self.record.write(json.dumps({
                "time": time.time(),
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "message_id": headers.get("Message-ID", ""),
                "subject": headers.get("Subject", ""),
                "data_b64": base64.b64encode(envelope.original_content or b"").decode(),
                "session": getattr(session, "number", 0),
                "helo": session.host_name,
                "tls": session.ssl is not None,
                "auth": (session.auth_data or b"").decode(),
                "answers_pending": pending,
            }) + "\n")
        return reply


class Authenticator:
    def __init__(self, user, password):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


class ScriptedController(Controller):
    def __init__(self, handler, tls_context, authenticator, **kwargs):
        self.tls_context, self.authenticator = tls_context, authenticator
        super().__init__(handler, **kwargs)

    def factory(self):
        return SMTP(self.handler, enable_SMTPUTF8=True, decode_data=False,
                    tls_context=self.tls_context, authenticator=self.authenticator,
                    auth_required=self.authenticator is not None, auth_require_tls=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--script")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--auth")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    auth = Authenticator(*args.auth.split(":", 1)) if args.auth else None
    controller = ScriptedController(Scripted(args.record, args.script), tls, auth,
                                    hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
