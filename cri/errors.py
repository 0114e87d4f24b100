"""Errors raised by crid's domain code.

Domain code (images, runtime, cni) never imports grpc: it raises these and
cri.server.rpc maps them to gRPC status codes in one place. The message is
shown to the user as is, so it must say what went wrong in plain words.
"""


class CridError(Exception):
    """Base class of the errors that carry a user-facing message."""


class InvalidArgument(CridError):
    """The request is malformed or names something impossible."""


class NotFound(CridError):
    """The object the request names does not exist."""


class AlreadyExists(CridError):
    """An object with that name or id already exists."""


class FailedPrecondition(CridError):
    """The object is not in a state that allows the operation."""


class Unavailable(CridError):
    """crid (or something it depends on) cannot serve the request right now."""


class ResourceExhausted(CridError):
    """A limit was reached (disk, a quota, a size cap)."""


class DeadlineExceeded(CridError):
    """An operation ran out of time (not the client's own deadline)."""


class PermissionDenied(CridError):
    """The caller (or crid, towards a registry) is not allowed to do this."""


class Unimplemented(CridError):
    """crid does not do this at all (the message says why)."""


QUOTE_LIMIT = 128  # characters of user input an error message repeats


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """User input as an error message shows it: quoted (control characters
    escaped) and cut to ``limit`` characters, so that a huge or hostile value
    never makes the message itself a problem (gRPC clients refuse error
    metadata over 16 KiB)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"
