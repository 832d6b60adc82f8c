"""The API's request body parser: JSON only, bounded in size and nesting."""

import json
from collections.abc import Mapping
from typing import IO, Any

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from asyncjobs.conf import jobs_settings


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, Mapping) else item
        if isinstance(item, Mapping | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


class BoundedJSONParser(JSONParser):
    """JSON bodies of at most ``API_MAX_BODY_SIZE`` bytes (413 past it, before reading the
    rest) nesting at most ``API_MAX_JSON_DEPTH`` levels (400 past it)."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = jobs_settings.API_MAX_BODY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            if declared and int(declared) > limit:
                raise too_large
        except ValueError:
            raise ParseError("Invalid Content-Length header.") from None
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise too_large
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("The request body is not valid UTF-8.") from None
        except RecursionError:
            raise ParseError(self._too_deep()) from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if _depth(data) > jobs_settings.API_MAX_JSON_DEPTH:
            raise ParseError(self._too_deep())
        return data

    @staticmethod
    def _too_deep() -> str:
        return f"The JSON body nests deeper than {jobs_settings.API_MAX_JSON_DEPTH} levels."
