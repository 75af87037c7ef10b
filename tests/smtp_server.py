"""A real SMTP server for tests: aiosmtpd's ``SMTP`` protocol on 127.0.0.1, port chosen by the OS.

It is what aiosmtpd's ``Controller`` starts, served on the test's own event loop rather than
through the controller: the threaded ``Controller`` needs a fixed port (it connects back to
``self.port`` to check the server, so port 0 fails) and runs a second loop in a thread, and the
``UnthreadedController`` calls ``run_until_complete``, which a running loop refuses. On the
test's loop the handler can share ``asyncio.Event``s with the test, with no thread hand-off.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    """One message the server accepted (answered 250 to DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class RecordingHandler:
    """Records each accepted message; can be slow, refuse, or hold an exchange for the test.

    ``hold_data=n`` holds the n-th DATA before answering; ``hold_quit_after=n`` holds the QUIT
    that follows the n-th accepted message. Either sets ``held`` and waits for ``release``; a held
    DATA is then accepted, or answered 421 and not recorded when ``abort_held`` is set.
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[Received] = []
        self.data_count = 0
        self.refuse_rcpt: str | None = None
        self.refuse_data: str | None = None
        self.hold_data: int | None = None
        self.hold_quit_after: int | None = None
        self.abort_held = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._quit_held = False

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept the recipient unless told to refuse it."""
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Record the message when answering 250, and only then."""
        self.data_count += 1
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow server, on purpose
        if self.hold_data == self.data_count:
            self.held.set()
            await self.release.wait()
            if self.abort_held:
                return "421 4.3.0 Test server going away"
        if self.refuse_data:
            return self.refuse_data
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        async with self._changed:
            self._changed.notify_all()
        return "250 2.0.0 Accepted"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Hold the QUIT after the chosen accepted message, once."""
        if (
            self.hold_quit_after is not None
            and not self._quit_held
            and len(self.received) == self.hold_quit_after
        ):
            self._quit_held = True
            self.held.set()
            await self.release.wait()
        return "221 Bye"

    async def wait_for(self, count: int) -> None:
        """Until at least ``count`` messages were accepted."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)

    def message_ids(self) -> list[str]:
        """Message-ID of every accepted message, in arrival order."""
        return [str(item.message["Message-ID"]) for item in self.received]


class LocalSmtpServer:
    """``async with LocalSmtpServer(handler) as smtp:`` listens on 127.0.0.1:``smtp.port``."""

    def __init__(self, handler: RecordingHandler) -> None:
        self.handler = handler
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    def _factory(self) -> SMTP:
        return SMTP(
            self.handler,
            hostname="smtp.test",
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )

    async def __aenter__(self) -> LocalSmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, host="127.0.0.1", port=0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.handler.release.set()  # let any held exchange finish
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
