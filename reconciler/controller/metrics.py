"""The controller's Prometheus metrics, in a registry of its own (one per controller, so that
tests and embedders can run several), served at /metrics. No label ever names a resource: labels
are kinds, states, reasons and results, so the series stay few at any fleet size.
deploy/grafana/ and deploy/prometheus/ query these names (a test checks that they exist)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from providers.base import UnknownReason

STATES = ("in sync", "drifted", "unknown", "suspended", "failing", "waiting", "orphaned")
# Why a resource is unknown: its last observation's reason, or not observed yet (new, resumed).
NOT_OBSERVED = "not-observed"
OTHER = "other"
UNKNOWN_REASONS = (*(r.value for r in UnknownReason), NOT_OBSERVED)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._revisions: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()
        self._drifted_kinds: set[str] = set()
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
        self.revision_valid = Gauge(
            "fleet_revision_attempted_valid",
            "1 when the last attempted revision passed the validation gate, 0 when it was refused.",
            registry=r,
        )
        self.fetch_success_time = Gauge(
            "fleet_git_fetch_last_success_timestamp_seconds",
            "When this replica last read the fleet repo successfully (Unix time; 0: not yet).",
            registry=r,
        )
        self.drift_since = Gauge(
            "fleet_drift_oldest_timestamp_seconds",
            "When the longest-drifted resource of a kind became drifted (Unix time); no series for a"
            " kind with no drifted resource.",
            ["kind"],
            registry=r,
        )
        self.unknowns = Gauge(
            "fleet_unknown_resources",
            "Resources in state unknown, by kind and the reason of their last observation.",
            ["kind", "reason"],
            registry=r,
        )
        self.replicas = Gauge(
            "fleet_replicas", "Live replicas sharing the work, as seen from this one (1 alone).", registry=r
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
        if which == "attempted":
            self.revision_valid.set(1 if valid else 0)

    def set_resources(self, counts: dict[tuple[str, str], int], kinds: set[str]) -> None:
        for kind in kinds:
            for state in STATES:
                self.resources.labels(kind, state).set(counts.get((kind, state), 0))

    def set_drift_since(self, oldest: Mapping[str, datetime], kinds: set[str]) -> None:
        """One series per kind with a drifted resource: when its longest-drifted one drifted."""
        shown = {kind: since for kind, since in oldest.items() if kind in kinds}
        with self._lock:
            for kind in self._drifted_kinds - set(shown):
                self.drift_since.remove(kind)
            for kind, since in shown.items():
                self.drift_since.labels(kind).set(since.timestamp())
            self._drifted_kinds = set(shown)

    def set_unknowns(self, counts: Mapping[tuple[str, str | None], int], kinds: set[str]) -> None:
        """Unknown resources by kind and reason (None: not observed yet); every known reason of
        every kind has a series (0 when none), a reason fleet does not know counts as `other`."""
        shown = {(kind, reason): 0 for kind in kinds for reason in (*UNKNOWN_REASONS, OTHER)}
        for (kind, reason), count in counts.items():
            if kind in kinds:
                named = NOT_OBSERVED if reason is None else reason
                shown[(kind, named if named in UNKNOWN_REASONS else OTHER)] += count
        with self._lock:
            for (kind, reason), count in shown.items():
                self.unknowns.labels(kind, reason).set(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
