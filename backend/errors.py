"""Domain errors: raised plainly by the services (jobs, networks, uploads, visibility, lifecycle) and by
the routes, answered once by ``backend/app.py``'s exception handler as ``{"detail": message}`` with the
class's status. A message says what is wrong in words a person can act on."""
from __future__ import annotations


class DomainError(ValueError):
    """The caller's request cannot be done as asked; ``status`` is the HTTP status it is answered with."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def detail(self) -> str:
        return str(self)

    @property
    def more(self) -> dict:
        """Further fields of the answer beside ``detail`` (none but for ``ProposedNames``)."""
        return {}


class Invalid(DomainError):
    """Bad input: a value out of bounds, a file that does not fit its architecture (400)."""

    status = 400


class ProposedNames(Invalid):
    """An upload whose tensor names do not fit its architecture while its shapes do, one to one in order: the
    answer carries the mapping that would fit as ``proposed`` (backend/names.py), for the caller to send back."""

    def __init__(self, message: str, proposed: dict):
        super().__init__(message)
        self.proposed = proposed

    @property
    def more(self) -> dict:
        return {"proposed": self.proposed}


class Forbidden(DomainError):
    """Readable, but only its owner or an admin may change it (403)."""

    status = 403


class NotFound(DomainError):
    """It does not exist, or the caller may not read it (404: the two are not told apart)."""

    status = 404


class Conflict(DomainError):
    """The thing is in a state that forbids the request (409)."""

    status = 409


class TooLarge(DomainError):
    """Over a size limit or a storage quota (413)."""

    status = 413


class TooMany(DomainError):
    """Over a count limit, e.g. unfinished jobs per user (429)."""

    status = 429
