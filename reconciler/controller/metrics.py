"""The controller's Prometheus metrics, in a registry of its own (one per controller, so that
tests and embedders can run several), served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STATES = ("in sync", "drifted", "unknown", "suspended", "failing", "waiting", "orphaned")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._revisions: dict[str, tuple[str, str, str]] = {}
        r = self.registry
        self.reconcile_seconds = Histogram(
            "fleet_reconcile_duration_seconds",
            "Duration of the controller's reconcile runs, by kind and result.",
            ["kind", "result"],
            registry=r,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
        )
        self.actions = Counter(
            "fleet_actions",
            "Actions applied by the controller, by kind, action and result.",
            ["kind", "action", "result"],
            registry=r,
        )
        self.resources = Gauge(
            "fleet_resources",
            "Resources by kind and state, as the controller last saw them.",
            ["kind", "state"],
            registry=r,
        )
        self.revision_time = Gauge(
            "fleet_revision_timestamp_seconds",
            "When the last applied and the last attempted revision were taken (Unix time).",
            ["which"],
            registry=r,
        )
        self.revision_info = Gauge(
            "fleet_revision_info",
            "The last applied and the last attempted revision (value 1).",
            ["which", "revision", "valid"],
            registry=r,
        )
        self.fetch_seconds = Histogram(
            "fleet_git_fetch_duration_seconds",
            "Duration of fetching the fleet repo.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.fetch_errors = Counter("fleet_git_fetch_errors", "Failed fetches of the fleet repo.", registry=r)
        self.webhooks = Counter(
            "fleet_webhook_deliveries",
            "Webhook deliveries, by forge and result.",
            ["forge", "result"],
            registry=r,
        )
        self.queue_depth = Gauge("fleet_queue_depth", "Units of work waiting.", registry=r)
        self.lease_losses = Counter(
            "fleet_lease_losses", "Runs stopped because their resource leases were lost.", registry=r
        )
        self.observe_seconds = Histogram(
            "fleet_observe_duration_seconds",
            "Duration of observing one batch of resources, by kind.",
            ["kind"],
            registry=r,
            buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def set_revision(self, which: str, revision: str, valid: bool, at: float) -> None:
        """Keep one info series per `which`: the revision it names now."""
        labels = (which, revision, str(valid).lower())
        shown = self._revisions.get(which)
        if shown is not None and shown != labels:
            self.revision_info.remove(*shown)
        self._revisions[which] = labels
        self.revision_info.labels(*labels).set(1)
        self.revision_time.labels(which).set(at)

    def set_resources(self, counts: dict[tuple[str, str], int], kinds: set[str]) -> None:
        for kind in kinds:
            for state in STATES:
                self.resources.labels(kind, state).set(counts.get((kind, state), 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
