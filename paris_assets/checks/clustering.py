"""The quality gate on cluster_report: blocking checks that stop expert_shards and router_pairs."""

import json
import math

from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from ..io_managers import AssetFolder
from ..settings import Settings
from .gate import gate_severities, last_passed_materialisation


def _report(folder: AssetFolder) -> dict:
    return json.loads((folder.path / "report.json").read_text())


def previous_silhouette(instance, settings: Settings) -> float | None:
    """cluster_report's silhouette at the last materialisation before the latest one whose gate passed."""
    record = last_passed_materialisation(instance, settings)
    value = None if record is None else record.asset_materialization.metadata.get("silhouette")
    return None if value is None else float(value.value)


def build_cluster_checks(settings: Settings) -> list:
    r = settings.report
    severity = gate_severities(settings)
    balance = severity["davies_bouldin_below_maximum"]

    @asset_check(asset="cluster_report", blocking=True,
                 description=f"Silhouette (cosine, exact over every image) at least report.min_silhouette ({r.min_silhouette}).")
    def silhouette_above_minimum(cluster_report: AssetFolder) -> AssetCheckResult:
        value = _report(cluster_report)["silhouette"]
        return AssetCheckResult(passed=bool(math.isfinite(value) and value >= r.min_silhouette),
                                severity=severity["silhouette_above_minimum"],
                                metadata={"value": value, "threshold": r.min_silhouette})

    @asset_check(asset="cluster_report", blocking=True,
                 description="Silhouette fell by at most report.max_silhouette_drop since the last materialisation "
                             "whose gate passed.")
    def silhouette_not_dropped(context: AssetCheckExecutionContext, cluster_report: AssetFolder) -> AssetCheckResult:
        value = _report(cluster_report)["silhouette"]
        previous = previous_silhouette(context.instance, settings)
        drop = None if previous is None else previous - value
        return AssetCheckResult(passed=bool(drop is None or drop <= r.max_silhouette_drop),
                                severity=severity["silhouette_not_dropped"],
                                metadata={"value": value, "previous": previous if previous is not None else "none (no earlier passed gate)",
                                          "drop": drop if drop is not None else 0.0, "threshold": r.max_silhouette_drop})

    @asset_check(asset="cluster_report", blocking=True, description="Every one of the K clusters has images.")
    def no_empty_cluster(cluster_report: AssetFolder) -> AssetCheckResult:
        report = _report(cluster_report)
        empty = [c for c, n in enumerate(report["sizes"]) if n == 0]
        return AssetCheckResult(passed=not empty, severity=severity["no_empty_cluster"],
                                metadata={"value": len(empty), "threshold": 0, "empty_clusters": str(empty)})

    @asset_check(asset="cluster_report", blocking=True,
                 description=f"Davies-Bouldin at most report.max_davies_bouldin ({r.max_davies_bouldin}); {r.balance_severity}.")
    def davies_bouldin_below_maximum(cluster_report: AssetFolder) -> AssetCheckResult:
        value = _report(cluster_report)["davies_bouldin"]
        return AssetCheckResult(passed=bool(math.isfinite(value) and value <= r.max_davies_bouldin), severity=balance,
                                metadata={"value": value, "threshold": r.max_davies_bouldin})

    @asset_check(asset="cluster_report", blocking=True,
                 description=f"Largest cluster holds at most report.max_cluster_fraction ({r.max_cluster_fraction}) "
                             f"of the images; {r.balance_severity}.")
    def largest_cluster_below_maximum(cluster_report: AssetFolder) -> AssetCheckResult:
        value = _report(cluster_report)["largest_fraction"]
        return AssetCheckResult(passed=bool(value <= r.max_cluster_fraction), severity=balance,
                                metadata={"value": value, "threshold": r.max_cluster_fraction})

    return [silhouette_above_minimum, silhouette_not_dropped, no_empty_cluster, davies_bouldin_below_maximum,
            largest_cluster_below_maximum]
