"""Turn every failed check evaluation (ERROR or WARN) and every failed run into an alert."""

import time

from dagster import (
    DagsterEventType,
    DefaultSensorStatus,
    EventRecordsFilter,
    RunFailureSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from ..lib.outputs.alerts import append_alert, make_alert, post_webhook
from ..settings import Settings


def _deliver(context, settings: Settings, alert: dict) -> None:
    append_alert(settings.data_root, alert)
    context.log.warning(f"alert: {alert['kind']} {alert['asset']} {alert['check'] or ''}: {alert['message']}")
    if settings.alerts.webhook_url:
        try:
            post_webhook(settings.alerts.webhook_url, alert)
        except OSError as exc:  # the alert is already in alerts.jsonl; say the webhook failed, do not lose it
            context.log.error(f"alert webhook {settings.alerts.webhook_url} failed: {exc}")


def _number(metadata: dict, key: str):
    value = metadata.get(key)
    return None if value is None else value.value


def _check_records_since(instance, timestamp: float, limit: int):
    """Check evaluations logged after `timestamp`, oldest first. A time cursor, not a storage id: SQLite's
    run-sharded event log numbers events per run, so storage ids do not order events across runs."""
    return instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION, after_timestamp=timestamp),
        ascending=True, limit=limit)


def build_alert_sensors(settings: Settings) -> list:
    @sensor(name="check_failure_alerts", default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
            description="Alerts on every failed asset check (ERROR or WARN): alerts.jsonl, the log, the webhook.")
    def check_failure_alerts(context: SensorEvaluationContext):
        if not context.cursor:  # first tick: start from now, do not replay the instance's history
            context.update_cursor(str(time.time()))
            return SkipReason("watching check evaluations from now on")
        records = sorted(_check_records_since(context.instance, float(context.cursor), limit=500),
                         key=lambda r: r.event_log_entry.timestamp)
        if not records:
            return SkipReason("no new check evaluations")
        sent = 0
        for record in records:
            entry = record.event_log_entry
            evaluation = entry.dagster_event.event_specific_data
            if not evaluation.passed:
                severity = evaluation.severity.value if evaluation.severity else "ERROR"
                meta = evaluation.metadata
                _deliver(context, settings, make_alert(
                    "check_failed", evaluation.asset_key.to_user_string(), evaluation.check_name, severity,
                    f"check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} failed",
                    entry.run_id, settings.alerts.ui_base_url, _number(meta, "value"), _number(meta, "threshold"),
                    _number(meta, "previous")))
                sent += 1
        context.update_cursor(str(records[-1].event_log_entry.timestamp))
        return SkipReason(f"{sent} alert(s) sent") if sent else SkipReason("all new checks passed")

    @run_failure_sensor(name="run_failure_alerts", default_status=DefaultSensorStatus.RUNNING,
                        description="Alerts on every failed run: alerts.jsonl, the log, the webhook.")
    def run_failure_alerts(context: RunFailureSensorContext):
        run = context.dagster_run
        _deliver(context, settings, make_alert(
            "run_failed", ", ".join(k.to_user_string() for k in (run.asset_selection or [])) or run.job_name, None,
            "ERROR", context.failure_event.message or "run failed", run.run_id, settings.alerts.ui_base_url))

    return [check_failure_alerts, run_failure_alerts]
