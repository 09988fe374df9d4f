"""The human review gate: a person approves or rejects a blessed challenger before promotion."""

from __future__ import annotations

from ctloop.gates.blessing import Blessing
from ctloop.gates.reports import blessing_markdown
from ctloop.gates.verdict import BLOCK, Verdict

APPROVED = "approved"
REJECTED = "rejected"
TIMEOUT = "timeout"


def review_request(blessing: Blessing, trained_on: str) -> str:
    """What the reviewer reads (markdown): the blessing, the data window, where the card is."""
    return (
        "## Review the challenger before promotion\n\n"
        + blessing_markdown(blessing, None)
        + f"\n\nTrained on {trained_on}. The model card is in this run's artifacts."
    )


def review_verdict(approve: bool | None, reason: str = "", timeout: float | None = None) -> Verdict:
    """The reviewer's answer as a verdict; `approve=None` means nobody answered in `timeout` s.

    A rejection or a timeout blocks with one reason; an approval adds no reason, so a blessed
    challenger keeps the blessing's reasons. `details` holds the answer and the reviewer's words
    (`answer`, `reason`), recorded as the `ctloop.review` and `ctloop.review_reason` tags.
    """
    if approve is None:
        said = f"review timed out after {timeout} s: the champion stays"
        return Verdict("review", False, (said,), BLOCK, {"answer": TIMEOUT, "reason": said})
    if approve:
        return Verdict(
            "review", True, (), BLOCK, {"answer": APPROVED, "reason": reason or APPROVED}
        )
    said = f"rejected in review: {reason or 'no reason given'}"
    return Verdict("review", False, (said,), BLOCK, {"answer": REJECTED, "reason": said})
