"""Which workspace the daemon works in: the config names it by UUID or by name, or not at all."""

from __future__ import annotations

from watchd.carmic.errors import NotFound
from watchd.carmic.models import Me, Workspace

ME_ROUTE = "/v1/me"


def _listing(me: Me) -> str:
    return ", ".join(f"{w.name!r} ({w.id})" for w in me.workspaces)


def choose_workspace(me: Me, wanted: str) -> Workspace:
    """The workspace ``wanted`` names (its UUID, else its exact name, else its name ignoring
    case when that is unambiguous); empty means the first one. Raises :class:`NotFound` with the
    workspaces the user does have, so the operator can fix the config from the message alone."""
    if not me.workspaces:
        raise NotFound(
            f"the Carmic user {me.email or me.id} belongs to no workspace", endpoint=ME_ROUTE
        )
    wanted = wanted.strip()
    if not wanted:
        return me.workspaces[0]
    for w in me.workspaces:
        if w.id.lower() == wanted.lower():
            return w
    exact = [w for w in me.workspaces if w.name == wanted]
    folded = [w for w in me.workspaces if w.name.casefold() == wanted.casefold()]
    for matches in (exact, folded):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(
                f"several workspaces are named {wanted!r}: give its UUID instead; "
                f"the user has {_listing(me)}",
                endpoint=ME_ROUTE,
            )
    raise NotFound(
        f"no workspace {wanted!r} for {me.email or me.id}; the user has {_listing(me)}",
        endpoint=ME_ROUTE,
    )
