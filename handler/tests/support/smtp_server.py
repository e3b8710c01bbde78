"""A real SMTP submission server for cmk-guard's email tests (handler/tests/notify.rs).

aiosmtpd on 127.0.0.1 with STARTTLS required and AUTH (PLAIN/LOGIN) for one user, or, with
--no-tls, a server that offers neither (the client must refuse it). Every accepted message is
written to --maildir as NNNN.eml (raw) plus NNNN.json (the decoded fields and how the session
was secured), so the Rust test reads what a mail client would show without a MIME parser.
Runs until its standard input closes, so it never outlives the test.
"""

import argparse
import email
import email.policy
import itertools
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class SaveToFolder:
    def __init__(self, folder):
        self.folder = folder
        self.numbers = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        number = next(self.numbers)
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            parts.append({"content_type": part.get_content_type(), "body": part.get_content()})
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
            "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "headers": {name.lower(): str(value) for name, value in message.items()},
            "content_type": message.get_content_type(),
            "parts": parts,
        }
        base = os.path.join(self.folder, f"{number:04}")
        with open(base + ".eml", "wb") as file:
            file.write(raw)
        # Written last and renamed into place: the test waits for the .json.
        with open(base + ".json.tmp", "w", encoding="utf-8") as file:
            json.dump(record, file)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--no-tls", action="store_true")
    args = parser.parse_args()

    options = {"server_hostname": "localhost"}
    if not args.no_tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        options.update(
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=authenticator(args.user, args.password),
        )
    controller = Controller(
        SaveToFolder(args.maildir), hostname="127.0.0.1", port=args.port, **options
    )
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
