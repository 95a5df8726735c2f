"""The Grafana dashboard of `fleet serve`, as code (grafana-foundation-sdk): the JSON beside this
file is generated from it, never edited by hand. `make dashboards` writes it again, and a test
checks that the two agree and that every metric a panel queries is one the controller exports.

Queries aggregate over replicas: store-wide gauges (resources, drift, unknowns, replicas, revisions)
are the same on every replica, so they take the max (or min) across instances; counters and
histograms are summed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "fleet-controller.json"
UID = "fleet-controller"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'  # every query is limited to the chosen scrape job(s)
RATE = "$__rate_interval"


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)
    )


def graph(
    title: str, description: str, unit: str, *queries: prometheus.Dataquery, stacked: bool = False
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(12)
        .fill_opacity(10)
        .legend(
            common_builder.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
        )
    )
    if stacked:
        panel = panel.fill_opacity(60).stacking(
            common_builder.StackingConfig().mode(common.StackingMode.NORMAL)
        )
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    expr: str,
    steps: list[model.Threshold],
    mappings: list[model.ValueMapping] | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(6)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .thresholds(dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
        .with_target(query(expr))
    )
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def build() -> dashboard_builder.Dashboard:
    """The dashboard: rows for following the repo, reconciling, resources and replicas."""
    green, amber, red = "green", "orange", "red"
    return (
        dashboard_builder.Dashboard("fleet controller")
        .uid(UID)
        .description(
            "fleet serve: reconciles, actions, resources, drift, unknowns, following the repo, replicas."
        )
        .tags(["fleet"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(
            dashboard_builder.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard_builder.QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(fleet_queue_depth, job)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        # --- at a glance ---------------------------------------------------------------------
        .with_row(dashboard_builder.Row("At a glance"))
        .with_panel(
            single(
                "Last attempted revision",
                "Whether the newest revision of the followed branch passed the validation gate. When"
                " refused, nothing of it is applied and the last good revision stays in force;"
                " GET /api/v1/status lists its diagnostics.",
                "none",
                f"max(fleet_revision_attempted_valid{{{JOB}}})",
                [model.Threshold(None, red), model.Threshold(1, green)],
                [
                    model.ValueMap(
                        {
                            "0": model.ValueMappingResult(text="refused", color=red),
                            "1": model.ValueMappingResult(text="valid", color=green),
                        }
                    )
                ],
            )
        )
        .with_panel(
            single(
                "Since the last successful fetch",
                "Time since any replica last read the fleet repo.",
                "s",
                f"time() - max(fleet_git_fetch_last_success_timestamp_seconds{{{JOB}}})",
                [model.Threshold(None, green), model.Threshold(600, amber), model.Threshold(900, red)],
            )
        )
        .with_panel(
            single(
                "Live replicas",
                "Replicas sharing the work (heartbeats in the job queue); 1 for a single replica.",
                "none",
                f"max(fleet_replicas{{{JOB}}})",
                [model.Threshold(None, red), model.Threshold(1, green)],
            )
        )
        .with_panel(
            single(
                "Oldest drift",
                "How long the longest-drifted resource has been drifted (no value: nothing drifted).",
                "s",
                f"time() - min(fleet_drift_oldest_timestamp_seconds{{{JOB}}})",
                [model.Threshold(None, green), model.Threshold(3600, amber), model.Threshold(4 * 3600, red)],
            )
        )
        # --- reconciling ---------------------------------------------------------------------
        .with_row(dashboard_builder.Row("Reconciling"))
        .with_panel(
            graph(
                "Reconcile runs by kind and result",
                "Units of work per second: ok, incomplete (some resources not observed), failed (an"
                " action failed), refused (by a guard), error.",
                "ops",
                query(
                    f"sum by (kind, result) (rate(fleet_reconcile_duration_seconds_count{{{JOB}}}[{RATE}]))",
                    "{{kind}} {{result}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Reconcile duration by kind",
                "p50 and p95 of a unit of work (a kind and a site), from plan to record.",
                "s",
                query(
                    "histogram_quantile(0.95, sum by (kind, le)"
                    f" (rate(fleet_reconcile_duration_seconds_bucket{{{JOB}}}[{RATE}])))",
                    "p95 {{kind}}",
                ),
                query(
                    "histogram_quantile(0.5, sum by (kind, le)"
                    f" (rate(fleet_reconcile_duration_seconds_bucket{{{JOB}}}[{RATE}])))",
                    "p50 {{kind}}",
                    "B",
                ),
            )
        )
        .with_panel(
            graph(
                "Actions by result",
                "Actions applied per second, by kind and result (succeeded, failed, skipped, interrupted).",
                "ops",
                query(
                    f"sum by (kind, result) (rate(fleet_actions_total{{{JOB}}}[{RATE}]))",
                    "{{kind}} {{result}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Observe duration by kind",
                "p95 of observing one batch of resources (for Machine: its BMCs).",
                "s",
                query(
                    "histogram_quantile(0.95, sum by (kind, le)"
                    f" (rate(fleet_observe_duration_seconds_bucket{{{JOB}}}[{RATE}])))",
                    "p95 {{kind}}",
                ),
            )
        )
        # --- resources -----------------------------------------------------------------------
        .with_row(dashboard_builder.Row("Resources"))
        .with_panel(
            graph(
                "Resources by state",
                "Every resource of the revision in force (and the orphans), by state.",
                "none",
                query(f"sum by (state) (max by (kind, state) (fleet_resources{{{JOB}}}))", "{{state}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Resources by kind and state",
                "The same, per kind.",
                "none",
                query(f"max by (kind, state) (fleet_resources{{{JOB}}}) > 0", "{{kind}} {{state}}"),
            )
        )
        .with_panel(
            graph(
                "Drift age by kind",
                "How long the longest-drifted resource of each kind has been drifted (drift that is"
                " only reported, or not yet corrected).",
                "s",
                query(f"time() - min by (kind) (fleet_drift_oldest_timestamp_seconds{{{JOB}}})", "{{kind}}"),
            )
        )
        .with_panel(
            graph(
                "Unknown resources by reason",
                "Resources that could not be observed, by the reason of their last observation"
                " (not-observed: new or resumed, not looked at yet).",
                "none",
                query(
                    f"sum by (reason) (max by (kind, reason) (fleet_unknown_resources{{{JOB}}})) > 0",
                    "{{reason}}",
                ),
                stacked=True,
            )
        )
        # --- following the repo --------------------------------------------------------------
        .with_row(dashboard_builder.Row("Following the repo"))
        .with_panel(
            graph(
                "Git fetches",
                "Fetch duration (p95) and failed fetches per second.",
                "s",
                query(
                    "histogram_quantile(0.95, sum by (le)"
                    f" (rate(fleet_git_fetch_duration_seconds_bucket{{{JOB}}}[{RATE}])))",
                    "p95 fetch",
                ),
                query(f"sum(rate(fleet_git_fetch_errors_total{{{JOB}}}[{RATE}]))", "failed fetches /s", "B"),
            )
        )
        .with_panel(
            graph(
                "Webhook deliveries by forge and result",
                "Push and pull request deliveries per second, by forge and how they were answered.",
                "ops",
                query(
                    f"sum by (forge, result) (rate(fleet_webhook_deliveries_total{{{JOB}}}[{RATE}]))",
                    "{{forge}} {{result}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Revision age",
                "Time since the last applied and the last attempted revision were taken.",
                "s",
                query(f"time() - max by (which) (fleet_revision_timestamp_seconds{{{JOB}}})", "{{which}}"),
            )
        )
        .with_panel(
            graph(
                "Time since the last successful fetch",
                "Per replica that has fetched: with several, any one of them may poll.",
                "s",
                query(
                    f"time() - (fleet_git_fetch_last_success_timestamp_seconds{{{JOB}}} > 0)",
                    "{{instance}}",
                ),
            )
        )
        # --- replicas and queue --------------------------------------------------------------
        .with_row(dashboard_builder.Row("Replicas and queue"))
        .with_panel(
            graph(
                "Queue depth",
                "Units of work waiting on each replica's own queue.",
                "none",
                query(f"sum by (instance) (fleet_queue_depth{{{JOB}}})", "{{instance}}"),
            )
        )
        .with_panel(
            graph(
                "Live replicas and lease losses",
                "Replicas with a fresh heartbeat, and runs stopped because their resource leases were"
                " lost (a paused or partitioned replica).",
                "none",
                query(f"max(fleet_replicas{{{JOB}}})", "live replicas"),
                query(f"sum(increase(fleet_lease_losses_total{{{JOB}}}[{RATE}]))", "lease losses", "B"),
            )
        )
    )


def render() -> str:
    """The dashboard's JSON, as committed (sorted keys, two-space indent, a final newline)."""
    built = build().build()
    for number, panel in enumerate(built.panels or [], start=1):  # Grafana wants unique ids
        panel.id_val = number
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help=f"write the JSON here (e.g. {OUTPUT.name}); else print it")
    args = parser.parse_args(argv)
    text = render()
    if args.write is None:
        sys.stdout.write(text)
    else:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
