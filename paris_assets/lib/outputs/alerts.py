"""Alerts: one JSON line per failed check or run in `<data_dir>/alerts.jsonl`, and a Slack-compatible post."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timezone

from upath import UPath


def make_alert(kind: str, asset: str | None, check: str | None, severity: str, message: str, run_id: str,
               ui_base_url: str, value=None, threshold=None, previous=None) -> dict:
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,  # check_failed or run_failed
        "asset": asset, "check": check, "severity": severity,
        "value": value, "threshold": threshold, "previous": previous,
        "message": message, "run_id": run_id,
        "run_url": f"{ui_base_url.rstrip('/')}/runs/{run_id}" if run_id else None,
    }


def append_alert(data_root: str, alert: dict) -> None:
    """Append one line to alerts.jsonl (local or fsspec root)."""
    path = UPath(data_root) / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(alert, sort_keys=True, default=str) + "\n"
    if path.protocol in ("", "file", "local"):
        with open(path.path if hasattr(path, "path") else path, "a") as fh:
            fh.write(line)
    else:  # object stores cannot append: rewrite
        old = path.read_text() if path.exists() else ""
        path.write_text(old + line)


def slack_payload(alert: dict) -> dict:
    """Slack incoming-webhook JSON: a text fallback and a section block with the facts."""
    what = f"{alert['asset']} / {alert['check']}" if alert["check"] else (alert["asset"] or "run")
    facts = f"value {alert['value']}, threshold {alert['threshold']}, previous {alert['previous']}" \
        if alert["kind"] == "check_failed" else alert["message"]
    text = f":rotating_light: paris-assets {alert['severity']}: {what} failed. {facts}. <{alert['run_url']}|run>"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def post_webhook(url: str, alert: dict, timeout: float = 10.0) -> int:
    """POST the alert to a Slack-compatible webhook; returns the HTTP status."""
    body = json.dumps(slack_payload(alert)).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status
