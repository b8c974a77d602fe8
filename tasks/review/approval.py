"""The approval step (``review.approval: true``): after the report the evaluate flow pauses with
Prefect's ``pause_flow_run(wait_for_input=Approval)``; a reviewer opens the paused flow run in
the Prefect UI, reads the report and resumes it with the typed form (approve / reject, comment,
name). The decision goes onto the MLflow run as tags; a rejection — or no decision within
``review.approval_timeout_s`` — fails the flow run with the comment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from prefect.input import RunInput
from pydantic import Field

APPROVAL_TAG = "bifocal.approval"


class Approval(RunInput):
    """The form a reviewer fills in to resume the paused evaluation."""

    decision: Literal["approve", "reject"] = Field(
        ..., description="approve: the evaluation stands; reject: the flow run fails.")
    comment: str = Field("", description="Why (required reading for a rejection).")
    reviewer: str = Field("", description="Who decides (name or e-mail).")


class ApprovalRejected(RuntimeError):
    """A reviewer rejected the evaluation, or nobody decided in time."""


@dataclass(frozen=True)
class Decision:
    status: Literal["approved", "rejected", "timed_out"]
    comment: str
    reviewer: str
    at: str  # ISO time of the decision

    def tags(self) -> dict[str, str]:
        return {APPROVAL_TAG: self.status, f"{APPROVAL_TAG}.comment": self.comment[:5000],
                f"{APPROVAL_TAG}.by": self.reviewer, f"{APPROVAL_TAG}.at": self.at}

    def message(self) -> str:
        who = f" by {self.reviewer}" if self.reviewer else ""
        text = {"approved": "approved", "rejected": "rejected",
                "timed_out": "not decided in time (counted as rejected)"}[self.status]
        return f"evaluation {text}{who}" + (f": {self.comment}" if self.comment else "")


def poll_interval(timeout_s: int) -> int:
    """Seconds between checks of the paused state: 10, fewer for short timeouts."""
    return max(1, min(10, timeout_s // 10))


def wait_for_approval(timeout_s: int) -> Decision:
    """Pause the current flow run until the form is submitted or ``timeout_s`` passes."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    try:
        answer = pause_flow_run(wait_for_input=Approval, timeout=timeout_s,
                                poll_interval=poll_interval(timeout_s))
    except FlowPauseTimeout:
        return Decision("timed_out", f"no decision within {timeout_s} s", "", _now())
    status: Literal["approved", "rejected"] = (
        "approved" if answer.decision == "approve" else "rejected")
    return Decision(status, answer.comment, answer.reviewer, _now())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
