"""Who is calling: the principal of one request, set per call by the server's auth interceptor.

Without mutual TLS every caller is the local admin (CONTRACT.md, "Who may call what"). With it,
the name, role and (for a door) site come from the client certificate, never from the request.
Audit lines, logs and per-role rules read the caller from here."""
from __future__ import annotations

import contextvars
from dataclasses import dataclass

DOOR, ENROLLER, ADMIN = "door", "enroller", "admin"
ROLES = (DOOR, ENROLLER, ADMIN)


@dataclass(frozen=True)
class Caller:
    name: str = "local"        # the client certificate's name, or "local" without mutual TLS
    role: str = ADMIN
    site: str | None = None    # a door's site, from its certificate; None for other roles


LOCAL = Caller()
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller", default=LOCAL)
