"""What every blocking check returns: its facts as metadata, and its problems as a list (or plain "none")."""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue


def check_result(passed: bool, facts: dict, max_problems: int = 50) -> AssetCheckResult:
    meta = {k: v for k, v in facts.items() if k != "problems"}
    problems = facts["problems"]
    meta["problems"] = MetadataValue.md("\n".join(f"- {p}" for p in problems[:max_problems])) if problems else "none"
    return AssetCheckResult(passed=passed, metadata=meta, severity=AssetCheckSeverity.ERROR)
