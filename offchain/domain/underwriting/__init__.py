"""Underwriting: pure decision logic (no I/O).

bank_statement.py  transactions -> inflows, volatility, NSF/overdrafts, debt service, DSCR, affordability
features.py        applicant (application, statement, KYC) -> the scorecard's attributes
scorecard.py       the fitted artefact applied: points, PD, rating, reason codes, on-chain adjustment
history.py         the borrower's loans on the chain, folded for policy and scoring
policy.py          rules with stable reason codes: KYC, screening, chain, exposure, thin file, cutoffs
decision.py        Application and Decision value objects
fitting.py         offline fitting and cross-validation (scorecardpy + scikit-learn; not for services)
models/            committed artefacts `<version>.json` and `CURRENT`
"""
