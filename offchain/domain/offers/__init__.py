"""Offers: pricing by risk rating, repayment schedules as LoanBook enforces them, the agreement.

pricing.py   PricingPolicy (rates and fees per rating), quote() -> OfferTerms options
schedule.py  declining-balance and flat schedules in minor units, effective annual rate
agreement.py canonical agreement document, terms_hash, payout/party refs, LoanBook Terms
"""

from offchain.domain.offers.agreement import (
    Agreement,
    AgreementError,
    ChainTerms,
    Collateral,
    PayoutAccount,
    PayoutMethod,
    borrower_ref,
    build_agreement,
    canonical_json,
    chain_loan_id,
    is_valid_nuban,
    nuban_check_digit,
    partner_ref,
    terms_hash_of,
    to_chain_terms,
)
from offchain.domain.offers.pricing import (
    Affordability,
    Basis,
    OfferTerms,
    PricingError,
    PricingPolicy,
    Quote,
    RatePlan,
    Refusal,
    price,
    quote,
)
from offchain.domain.offers.schedule import (
    Frequency,
    Installment,
    Method,
    Schedule,
    ScheduleError,
    build_schedule,
    chain_amounts,
    effective_annual_rate,
)

__all__ = [
    "Affordability",
    "Agreement",
    "AgreementError",
    "Basis",
    "ChainTerms",
    "Collateral",
    "Frequency",
    "Installment",
    "Method",
    "OfferTerms",
    "PayoutAccount",
    "PayoutMethod",
    "PricingError",
    "PricingPolicy",
    "Quote",
    "RatePlan",
    "Refusal",
    "Schedule",
    "ScheduleError",
    "borrower_ref",
    "build_agreement",
    "build_schedule",
    "canonical_json",
    "chain_amounts",
    "chain_loan_id",
    "effective_annual_rate",
    "is_valid_nuban",
    "nuban_check_digit",
    "partner_ref",
    "price",
    "quote",
    "terms_hash_of",
    "to_chain_terms",
]
