"""The quality gate's verdict as plain data: which checks of a cluster_report materialisation block the training
outputs, and the message that says why and what to do. The Dagster side (checks/gate.py) reads the instance."""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, FAILED, MISSING = "passed", "failed", "not evaluated"


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    blocking: bool            # ERROR severity: under the current settings, or as the evaluation recorded it
    status: str               # PASSED, FAILED or MISSING
    value: object = None
    threshold: object = None


@dataclass
class Verdict:
    passed: bool
    report_run_id: str | None                       # the run that materialised the judged cluster_report
    checks: list[CheckOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "cluster_report_run_id": self.report_run_id, "problems": self.problems,
                "checks": {c.name: {"status": c.status, "blocking": c.blocking, "value": c.value,
                                    "threshold": c.threshold} for c in self.checks}}


def judge(report_run_id: str | None, checks: list[CheckOutcome], stale: str | None = None) -> Verdict:
    """The gate passes when every blocking check was evaluated on this materialisation and passed, and the
    materialisation judged the clustering that would be shipped (`stale` says how it did not)."""
    problems = []
    if report_run_id is None:
        problems.append("cluster_report has never been materialised")
    for c in checks:
        if c.blocking and c.status != PASSED:
            detail = "" if c.status == MISSING else f": value {_fmt(c.value)}, threshold {_fmt(c.threshold)}"
            problems.append(f"{c.name} {c.status}{detail}")
    if stale:
        problems.append(stale)
    return Verdict(passed=not problems, report_run_id=report_run_id, checks=checks, problems=problems)


def refusal(asset: str, verdict: Verdict) -> str:
    """What a refused expert_shards or router_pairs says: the failed checks, and the three ways forward."""
    run = f" (run {verdict.report_run_id})" if verdict.report_run_id else ""
    lines = [f"{asset} refused: the quality gate on the latest cluster_report{run} has not passed:"]
    lines += [f"  - {p}" for p in verdict.problems]
    lines += ["Nothing was written; the previous training outputs are untouched. To go on, either:",
              "  - fix the clustering (e.g. clustering.k, clustering.method) or the thresholds under `report:` in the "
              "settings file, then materialise cluster_report with its checks (`cluster_labels+` selects it all); or",
              "  - if you have looked at cluster_report and accept this clustering, launch this asset with run config "
              "`ops: {" + asset + ": {config: {accept_failed_gate: true}}}` (recorded in its metadata and the manifest)."]
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
