"""Domain errors, mapped once at the edge (servicer, CLI) to gRPC status codes."""
from __future__ import annotations


class FacegateError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(FacegateError):
    code = "INVALID_ARGUMENT"


class NotFound(FacegateError):
    code = "NOT_FOUND"


class FailedPrecondition(FacegateError):
    code = "FAILED_PRECONDITION"


class Unavailable(FacegateError):
    """A store the server needs cannot be reached now (the client may try again)."""
    code = "UNAVAILABLE"
