"""SMTP client: alerts and reports as multipart/alternative e-mails (text + HTML), over real SMTP.

`Mailer.from_settings` builds it from the `LEADFLOW_SMTP_*` / `LEADFLOW_EMAIL_*` settings.
In sandbox mode the default target is a local server on `host:8025`, e.g. aiosmtpd's own
command line, which keeps every message in a Maildir (give it a directory that does not exist
yet, which it creates as a Maildir, or an existing Maildir):

    python -m aiosmtpd -n -l 127.0.0.1:8025 -c aiosmtpd.handlers.Mailbox .leadflow/mail

Every failure surfaces as `EmailError`, whose message names the server and what went wrong
and never the password (the only place it is used is `SMTP.login`).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from pydantic import SecretStr

from leadflow.settings import Settings

log = logging.getLogger("leadflow.email")


class EmailError(RuntimeError):
    """Sending failed; the message says where and why (never with the password)."""


class EmailNotConfigured(EmailError):
    """No SMTP server or no recipients are configured, so there is nowhere to send to."""


@dataclass(frozen=True)
class EmailContent:
    """One e-mail's subject and its two renderings of the same content."""

    subject: str
    text: str
    html: str


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return f"{code} {text}".strip()


class Mailer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        recipients: Sequence[str],
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout: float = 10.0,
    ) -> None:
        if starttls and use_ssl:
            raise ValueError(
                "choose one of STARTTLS (LEADFLOW_SMTP_STARTTLS, port 587) and implicit TLS "
                "(LEADFLOW_SMTP_SSL, port 465), not both"
            )
        if not recipients:
            raise EmailNotConfigured("no e-mail recipients (LEADFLOW_EMAIL_TO)")
        if username and password is None:
            raise ValueError(f"SMTP user {username!r} has no password (LEADFLOW_SMTP_PASSWORD)")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.username = username
        self._password = password
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        host = settings.smtp_server
        if host is None:
            raise EmailNotConfigured("no SMTP server (LEADFLOW_SMTP_HOST)")
        return cls(
            host,
            settings.smtp_port,
            sender=settings.email_from,
            recipients=settings.email_recipients,
            starttls=settings.smtp_starttls,
            use_ssl=settings.smtp_ssl,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
        )

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Mailer({self.server}, from={self.sender!r}, to={self.recipients!r})"

    def build(
        self, content: EmailContent, headers: Mapping[str, str] | None = None
    ) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = content.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(usegmt=True)
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
        for name, value in (headers or {}).items():
            message[name] = value
        # Text first: a multipart/alternative lists its parts from plainest to richest, and
        # a client shows the last one it can render.
        message.set_content(content.text)
        message.add_alternative(content.html, subtype="html")
        return message

    def send(self, content: EmailContent, headers: Mapping[str, str] | None = None) -> EmailMessage:
        """Send one e-mail to every recipient; returns the message as sent."""
        message = self.build(content, headers)
        try:
            refused = self._deliver(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise EmailError(
                f"SMTP server {self.server} refused the login of {self.username!r}: "
                f"{_reply(exc.smtp_code, exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise EmailError(
                f"SMTP server {self.server} refused every recipient: "
                + "; ".join(
                    f"{rcpt} ({_reply(*answer)})" for rcpt, answer in exc.recipients.items()
                )
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise EmailError(
                f"SMTP server {self.server} answered {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from exc
        except smtplib.SMTPException as exc:
            raise EmailError(f"SMTP exchange with {self.server} failed: {exc}") from exc
        except OSError as exc:  # refused, unreachable, timed out, TLS handshake
            raise EmailError(f"cannot reach SMTP server {self.server}: {exc}") from exc
        if refused:
            log.warning(
                "SMTP server %s refused %s; %r went to the others",
                self.server,
                "; ".join(f"{rcpt} ({_reply(*answer)})" for rcpt, answer in refused.items()),
                content.subject,
            )
        log.info(
            "e-mailed %r to %d recipient(s) via %s",
            content.subject,
            len(self.recipients) - len(refused),
            self.server,
        )
        return message

    def _deliver(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self._password is not None:
                smtp.login(self.username, self._password.get_secret_value())
            return smtp.send_message(message, to_addrs=self.recipients)
