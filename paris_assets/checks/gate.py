"""The quality gate across runs. Dagster's blocking checks stop downstream steps of the same run only; a later run
that selects just expert_shards or router_pairs (UI, CLI, Python, a backfill, a schedule) would ship a clustering the
gate rejected. So those assets read cluster_report's latest check evaluations from the instance itself."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, Config, DagsterInstance, EventLogRecord, Failure

from ..lib.clustering.gate import FAILED, MISSING, PASSED, CheckOutcome, Verdict, judge, refusal
from ..settings import Settings

REPORT, LABELS = AssetKey("cluster_report"), AssetKey("cluster_labels")
HISTORY = 1000  # check evaluations read back per check: more cluster_report materialisations than anyone keeps


class GateConfig(Config):
    accept_failed_gate: bool = False  # ship a clustering the gate rejected, after looking at cluster_report


def gate_severities(settings: Settings) -> dict[str, AssetCheckSeverity]:
    """cluster_report's checks and their severities under these settings: the ERROR ones block."""
    balance = AssetCheckSeverity.WARN if settings.report.balance_severity == "WARN" else AssetCheckSeverity.ERROR
    error = AssetCheckSeverity.ERROR
    return {"silhouette_above_minimum": error, "silhouette_not_dropped": error, "no_empty_cluster": error,
            "davies_bouldin_below_maximum": balance, "largest_cluster_below_maximum": balance}


def _evaluations(instance: DagsterInstance, names) -> dict[str, dict[int, object]]:
    """For each check, its evaluations keyed by the storage id of the materialisation they judged (newest kept)."""
    found: dict[str, dict[int, object]] = {}
    for name in names:
        found[name] = {}
        for record in instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(REPORT, name),
                                                                                   limit=HISTORY):
            data = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
            target = getattr(data, "target_materialization_data", None)  # None while only planned
            if target is not None:
                found[name].setdefault(target.storage_id, data)
    return found


def _value(meta: dict, key: str):
    entry = meta.get(key)
    return None if entry is None else entry.value


def _outcomes(record: EventLogRecord, evaluations: dict, severities: dict) -> list[CheckOutcome]:
    outcomes = []
    for name, severity in severities.items():
        evaluation = evaluations[name].get(record.storage_id)
        if evaluation is None:
            outcomes.append(CheckOutcome(name, severity == AssetCheckSeverity.ERROR, MISSING))
            continue
        blocking = AssetCheckSeverity.ERROR in (severity, evaluation.severity)
        outcomes.append(CheckOutcome(name, blocking, PASSED if evaluation.passed else FAILED,
                                     _value(evaluation.metadata, "value"), _value(evaluation.metadata, "threshold")))
    return outcomes


def gate_verdict(instance: DagsterInstance, settings: Settings) -> Verdict:
    """The gate on the latest cluster_report materialisation: every ERROR check evaluated on it and passed, and it
    judged the cluster_labels materialisation that would be shipped."""
    severities = gate_severities(settings)
    records = instance.fetch_materializations(REPORT, limit=1).records
    if not records:
        return judge(None, [])
    latest = records[0]
    labels = instance.fetch_materializations(LABELS, limit=1).records
    # the cluster_labels materialisation the report read ("NULL" when Dagster had no record of it)
    judged = (latest.asset_materialization.tags or {}).get("dagster/input_event_pointer/cluster_labels", "")
    stale = None
    if not labels or not judged.isdigit() or int(judged) != labels[0].storage_id:
        stale = ("cluster_labels was re-materialised (or wiped) after cluster_report judged it: the gate has not "
                 "seen the clustering that would be shipped")
    return judge(latest.run_id, _outcomes(latest, _evaluations(instance, severities), severities), stale)


def last_passed_materialisation(instance: DagsterInstance, settings: Settings, skip: int = 1) -> EventLogRecord | None:
    """The newest cluster_report materialisation whose gate passed, after skipping the `skip` newest (the one
    being judged): what silhouette_not_dropped compares with, so re-running a bad clustering keeps failing."""
    severities = gate_severities(settings)
    evaluations = _evaluations(instance, severities)
    cursor, seen = None, 0
    while True:
        page = instance.fetch_materializations(REPORT, limit=100, cursor=cursor)
        for record in page.records:
            seen += 1
            if seen > skip and judge(record.run_id, _outcomes(record, evaluations, severities)).passed:
                return record
        if not page.has_more:
            return None
        cursor = page.cursor


def require_gate(context, settings: Settings, config: GateConfig, asset: str) -> dict:
    """Stop `asset` before it writes anything unless the gate passed or the run explicitly accepts it. Returns what
    the asset records about the gate in its metadata and the manifest."""
    verdict = gate_verdict(context.instance, settings)
    record = verdict.as_dict()
    if verdict.passed:
        context.log.info(f"{asset}: the quality gate on cluster_report (run {verdict.report_run_id}) passed")
        return {**record, "accepted_failed_gate": False}
    if not config.accept_failed_gate:
        raise Failure(description=refusal(asset, verdict), allow_retries=False,
                      metadata={"failed_checks": "; ".join(verdict.problems)})
    context.log.warning(f"{asset}: ACCEPTING A FAILED QUALITY GATE (run config accept_failed_gate: true). "
                        f"Training outputs are written from a clustering the gate rejected: " + "; ".join(verdict.problems))
    return {**record, "accepted_failed_gate": True}
