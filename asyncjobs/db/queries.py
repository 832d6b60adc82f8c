"""The SQL text of ``asyncjobs.db``, kept in ``sql/<file>.sql`` and read once per process.

A file holds named queries, each introduced by a line ``-- name: <name>``; other lines that
start with ``--`` are comments and are dropped. A query's text may hold ``{names}`` that the
caller fills in with ``str.format`` (quoted table and index names from the models'
metadata, generated column lists, ``IN`` markers): never values, which are always
parameters.
"""

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")


@cache
def _load(file: str) -> dict[str, str]:
    text = resources.files("asyncjobs.db").joinpath("sql", f"{file}.sql").read_text("utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            current = found.setdefault(match[1], [])
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def query(file: str, name: str) -> str:
    """The text of query ``name`` of ``sql/<file>.sql``; ``KeyError`` if there is none."""
    return _load(file)[name]
