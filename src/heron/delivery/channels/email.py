"""The EMAIL channel: one mail per message, subject from the callback's `subject` (the `header`
context) and body from its `message` (the `text` context), to the callback's recipients
(comma-separated), through the SMTP server of the `HERON_SMTP_*` settings. The device types'
alert mails go through the same server (`send_mails`).

Sending uses the standard library's smtplib in a worker thread: one connection per batch (one
callback's mails of a round), STARTTLS when configured, login when a user is set."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from heron.delivery.channels import Item, Result, compiled
from heron.keys import Keyring


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty: no SMTP server, mails are recorded as failures (alerts are skipped)
    port: int = 587
    user: str | None = None
    password: str | None = None
    sender: str = "heron@localhost"
    starttls: bool = True
    timeout: float = 10.0

    @property
    def configured(self) -> bool:
        return bool(self.host)

    @classmethod
    def from_settings(cls, settings: Any) -> SmtpConfig:
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            user=settings.smtp_user or None,
            password=password.get_secret_value() if password is not None else None,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
        )


@dataclass
class Mail:
    to: list[str]
    subject: str
    body: str


def recipients(text: str | None) -> list[str]:
    return [r.strip() for r in (text or "").split(",") if r.strip()]


def _build(config: SmtpConfig, mail: Mail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = config.sender
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=config.sender.rpartition("@")[2] or None)
    msg.set_content(mail.body)
    return msg


def send_mails(config: SmtpConfig, mails: Sequence[Mail]) -> list[str | None]:
    """Send over one connection; per mail, None when the server took it, else the error.
    Blocking: call it in a thread."""
    if not mails:
        return []
    if not config.configured:
        return ["no SMTP server configured (HERON_SMTP_HOST)"] * len(mails)
    try:
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    except (OSError, smtplib.SMTPException) as exc:
        return [f"SMTP connection error: {type(exc).__name__}: {exc}"[:1000]] * len(mails)
    errors: list[str | None] = []
    try:
        smtp.ehlo()
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if config.user:
            smtp.login(config.user, config.password or "")
        for mail in mails:
            # Each mail is its own outcome: one the e-mail package cannot build (a line break in
            # a header, say) fails alone; the mails already handed to the server stay sent.
            try:
                msg = _build(config, mail)
            except Exception as exc:  # whatever building one mail raises is that mail's failure
                errors.append(f"cannot build the mail: {type(exc).__name__}: {exc}"[:1000])
                continue
            try:
                refused = smtp.send_message(msg, from_addr=config.sender, to_addrs=mail.to)
            except smtplib.SMTPRecipientsRefused as exc:
                errors.append(f"SMTP refused every recipient: {', '.join(exc.recipients)}"[:1000])
            except (smtplib.SMTPException, ValueError) as exc:
                errors.append(f"SMTP error: {type(exc).__name__}: {exc}"[:1000])
            else:
                errors.append(f"SMTP refused: {', '.join(refused)}"[:1000] if refused else None)
    except (OSError, smtplib.SMTPException) as exc:
        failure = f"SMTP error: {type(exc).__name__}: {exc}"[:1000]
        errors += [failure] * (len(mails) - len(errors))
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return errors


class EmailChannel:
    def __init__(self, config: SmtpConfig, keyring: Keyring) -> None:
        self.config, self.keyring = config, keyring

    async def send(self, batch: Sequence[Item]) -> list[Result]:
        results: list[Result | None] = [None] * len(batch)
        mails: list[Mail] = []
        carried: list[int] = []
        for n, item in enumerate(batch):
            cb, dt = item.callback, item.device_type
            if item.values is None or cb is None or dt is None:
                results[n] = Result(False, error=item.error or "nothing to send")
                continue
            try:
                templates = compiled(self.keyring, cb, dt)
                assert templates.subject is not None and templates.message is not None
                mail = Mail(recipients(cb.recipient), templates.subject.render(item.values), "")
                mail.body = templates.message.render(item.values)
            except Exception as exc:
                results[n] = Result(False, error=f"cannot render the mail: {exc}")
                continue
            if not mail.to:
                results[n] = Result(False, error="the callback has no recipient")
                continue
            mails.append(mail)
            carried.append(n)
        errors = await asyncio.to_thread(send_mails, self.config, mails)
        for n, mail, error in zip(carried, mails, errors, strict=True):
            request: dict[str, object] = {"channel": "EMAIL", "to": mail.to, "subject": mail.subject}
            results[n] = Result(error is None, None, error, request)
        return [r if r is not None else Result(False, error="nothing to send") for r in results]
