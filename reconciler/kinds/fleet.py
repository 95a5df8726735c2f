"""The Fleet: the repo's root document (sites, credentials, providers, policies). No provider
observes it; it is listed and described like every other kind."""

from __future__ import annotations

from reconciler.kinds.base import Kind
from reconciler.spec import models


class FleetKind(Kind):
    name = "Fleet"
    short_names = ()
    model = models.Fleet

    def where(self, document: models.Document) -> str:
        assert isinstance(document, models.Fleet)
        return f"{len(document.spec.sites)} sites"


KIND = FleetKind()
