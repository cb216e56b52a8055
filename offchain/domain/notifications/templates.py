"""Borrower message templates: plain `string.Template` text, one subject and body per name.

Text in `[[...]]` is optional: it appears only when every placeholder in it has a value, so one
template serves producers that know more or less (collections sends `repayment_missed` both for
a missed installment, with its due date, and as a dunning step, with the days past due). Every
placeholder outside the brackets must be supplied: a message with a literal `$amount_due` in it
must not reach a borrower, so a missing value is an error, not a blank. Money values
(`{"value", "currency"}`) are written the way people read them, e.g. `NGN 12,500.00`.
"""

from __future__ import annotations

import re
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


# Placeholders follow the data collections publishes (offchain.domain.collections.plan_day).
_TEMPLATES: dict[str, tuple[str, str]] = {
    "repayment_due": (
        "Repayment of $amount_due due on $due_date",
        "Hello, a repayment of $amount_due on your loan $loan_reference is due on $due_date"
        "[[ (installment $installment)]]. Please make sure your account is funded. Thank you.",
    ),
    "repayment_missed": (
        "Missed repayment on loan $loan_reference",
        "Hello, we have not received your repayment[[ of $amount_missed]][[ due on $due_date]] for "
        "loan $loan_reference.[[ It is now $days_past_due day(s) late.]] Please pay $amount_due as "
        "soon as possible to avoid late fees.",
    ),
    "collection_initiated": (
        "Collection started on loan $loan_reference",
        "Hello, your loan $loan_reference is $days_past_due day(s) past due[[ with $outstanding "
        "outstanding]]. Collection has started: please pay $amount_due now or contact us to settle it.",
    ),
}
TEMPLATE_NAMES = tuple(_TEMPLATES)
_OPTIONAL = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


def _text(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"value", "currency"}:
        try:
            return str(Money.from_json(value))
        except (TypeError, ValueError) as error:
            raise TemplateError(f"bad money value {value!r}: {error}") from error
    return str(value)


def _fill(name: str, text: str, values: dict[str, str]) -> str:
    def optional(match: re.Match[str]) -> str:
        part = Template(match.group(1))
        return part.substitute(values) if all(i in values for i in part.get_identifiers()) else ""

    try:
        return Template(_OPTIONAL.sub(optional, text)).substitute(values)
    except KeyError as error:
        raise TemplateError(f"template {name!r} needs {error.args[0]!r} in data") from None
    except ValueError as error:
        raise TemplateError(f"template {name!r}: {error}") from None


def render(template: str, data: dict[str, Any], *, loan_id: str | None = None) -> Message:
    try:
        subject, body = _TEMPLATES[template]
    except KeyError:
        raise TemplateError(f"unknown template {template!r}; known: {', '.join(TEMPLATE_NAMES)}") from None
    values = {key: _text(value) for key, value in data.items() if value is not None}
    if loan_id is not None:
        values.setdefault("loan_reference", loan_id)
    # `$` in a value is text, never a placeholder: substitution happens once, on the template
    return Message(_fill(template, subject, values), _fill(template, body, values))
