"""The committee's approval of a loan: EIP-712 typed data for the signers, their signatures kept
per round, and one approve_with_signatures sent at the threshold.

A module of the gateway, not a service of its own: it is partner API (`/v1/loans/{id}/approval-
request`, `/v1/loans/{id}/approvals`) on the gateway's port, with no background job, and it
shares the gateway's chain client. Its own package keeps the signature flow out of the gateway's
loan and application code: approvals.py (rounds, signatures, submission), approval_chain.py (what
the LoanBook and the committee contract say), schemas.py, routes.py.
"""
