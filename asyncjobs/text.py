"""Untrusted text made safe to store and show.

Error messages, tracebacks, progress messages and excerpts of remote answers come from task
code or remote servers: any string at all. Every database asyncjobs supports must store
them as given, so before storage they pass through ``safe_text``: PostgreSQL's ``text``
refuses the NUL character, and no database driver can encode an unpaired surrogate as
UTF-8. Both become visible escapes (``\\x00``, ``\\ud800``), and the text is cut to a
length limit, so that a hostile message can neither block the recording of an attempt nor
fill the table.
"""

import re

# An unpaired UTF-16 surrogate: not a character, and not encodable as UTF-8.
_UNENCODABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return "\\x00" if match.group() == "\x00" else f"\\u{ord(match.group()):04x}"


def safe_text(value: object, limit: int | None = None, *, keep: str = "start") -> str:
    """``str(value)`` with NUL characters and unpaired surrogates replaced by the visible
    escapes ``\\x00`` and ``\\udXXX``, cut to at most ``limit`` characters.

    Parameters:
        value: anything; ``str()`` of it is taken (and if that raises, the type's name).
        limit: the most characters kept (None: no limit).
        keep: ``"start"`` keeps the beginning (messages), ``"end"`` the end (tracebacks,
            whose last lines say what went wrong).
    """
    try:
        text = value if type(value) is str else str(value)
    except (
        BaseException
    ):  # a hostile __str__ (even one raising SystemExit): its type says something
        text = f"<{type(value).__name__} whose str() failed>"
    if not text.isascii() or "\x00" in text:
        text = _UNENCODABLE.sub(_escape, text)
    if limit is not None and len(text) > limit:
        text = text[-limit:] if keep == "end" else text[:limit]
    return text


def has_lone_surrogate(value: object) -> bool:
    """Whether a JSON value (lists, dicts, strings, scalars) holds an unpaired surrogate in
    a string or a key: not Unicode text, so refused where text must be Unicode (the job
    API's bodies, as I-JSON asks), though asyncjobs can store it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")
