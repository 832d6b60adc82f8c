"""Reading Server-Sent Event streams in tests, as a client would."""

import threading
from collections.abc import Callable

from django.db import connections


def parse(chunks):
    """Parse text/event-stream chunks into (event, data) pairs."""
    parsed = []
    for block in b"".join(chunks).decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            parsed.append((lines["event"], lines.get("data")))
    return parsed


def events(response):
    """The whole stream of ``response``, parsed."""
    return parse(response.streaming_content)


def follow(response, then: Callable[[], None], *, timeout: float = 10):
    """Read the stream of ``response`` to its end; once its first event has been sent, run
    ``then`` on a thread of its own (its database connections closed after). Returns the
    events, parsed, once the stream ended and ``then`` returned (within ``timeout``)."""

    def run():
        try:
            then()
        finally:
            connections.close_all()

    chunks, thread = [], None
    for chunk in response.streaming_content:
        chunks.append(chunk)
        if thread is None and parse(chunks):
            thread = threading.Thread(target=run)
            thread.start()
    assert thread is not None, "no event before the stream ended"
    thread.join(timeout)
    assert not thread.is_alive()
    return parse(chunks)
