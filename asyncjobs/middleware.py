"""``EnqueuedByMiddleware``: record the request's user as the owner of the jobs it enqueues,
so that the user may poll them through the API."""

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from asyncjobs.services import enqueued_by


class EnqueuedByMiddleware:
    """Put it after ``AuthenticationMiddleware``. Works under WSGI and ASGI."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        with enqueued_by(getattr(request, "user", None)):
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        with enqueued_by(getattr(request, "user", None)):
            response: HttpResponse = await self.get_response(request)
            return response
