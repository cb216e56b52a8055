"""Borrower message templates: plain `string.Template` text, one per template name and channel.

Every placeholder must be supplied: a message with a literal `$amount` in it must not reach a
borrower, so a missing value is an error, not a blank. Money values (`{"value", "currency"}`) are
written the way people read them, e.g. `NGN 12,500.00`.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Any

from offchain.domain.money import Money


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Message:
    subject: str
    body: str


_TEMPLATES: dict[str, tuple[str, str]] = {
    "repayment_due": (
        "Repayment of $amount due on $due_date",
        "Hello, a repayment of $amount on your loan $loan_reference is due on $due_date. "
        "Please make sure your account is funded. Thank you.",
    ),
    "repayment_missed": (
        "Missed repayment of $amount",
        "Hello, we did not receive your repayment of $amount due on $due_date for loan "
        "$loan_reference. It is now $days_past_due day(s) late; please pay as soon as possible "
        "to avoid late fees.",
    ),
    "collection_initiated": (
        "Collection started on loan $loan_reference",
        "Hello, your loan $loan_reference is $days_past_due day(s) past due with $amount outstanding. "
        "Collection has started. Please contact us or pay now to settle it.",
    ),
}
TEMPLATE_NAMES = tuple(_TEMPLATES)


def _text(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"value", "currency"}:
        try:
            return str(Money.from_json(value))
        except (TypeError, ValueError) as error:
            raise TemplateError(f"bad money value {value!r}: {error}") from error
    return str(value)


def render(template: str, data: dict[str, Any], *, loan_id: str | None = None) -> Message:
    try:
        subject, body = _TEMPLATES[template]
    except KeyError:
        raise TemplateError(f"unknown template {template!r}; known: {', '.join(TEMPLATE_NAMES)}") from None
    values = {key: _text(value) for key, value in data.items()}
    if loan_id is not None:
        values.setdefault("loan_reference", loan_id)
    try:
        return Message(Template(subject).substitute(values), Template(body).substitute(values))
    except KeyError as error:
        raise TemplateError(f"template {template!r} needs {error.args[0]!r} in data") from None
    except ValueError as error:
        raise TemplateError(f"template {template!r}: {error}") from None
