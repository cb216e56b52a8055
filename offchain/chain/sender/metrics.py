"""The sender's Prometheus metrics, registered into the hosting service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class SenderMetrics:
    """Created unregistered, then registered into the hosting service's own registry."""

    def __init__(self) -> None:
        labels = ["address"]
        self.intents = Gauge(
            "caas_sender_intents", "Intents not final yet, by status.", [*labels, "status"], registry=None
        )
        self.next_nonce = Gauge(
            "caas_sender_next_nonce", "Next nonce the key will assign.", labels, registry=None
        )
        self.broadcasts = Counter(
            "caas_sender_broadcasts",
            "Signed transactions sent to the node (first send, rebroadcast, fee bump).",
            [*labels, "kind"],
            registry=None,
        )
        self.refused = Counter(
            "caas_sender_broadcast_refusals", "Broadcasts the node refused.", labels, registry=None
        )
        self.confirmations = Counter(
            "caas_sender_confirmations", "Intents confirmed on chain.", labels, registry=None
        )
        self.reverts = Counter(
            "caas_sender_reverts",
            "Intents that reverted on chain, or at gas estimation (then never sent).",
            [*labels, "stage"],
            registry=None,
        )
        self.fee_bumps = Counter(
            "caas_sender_fee_bumps", "Stuck transactions re-signed with higher fees.", labels, registry=None
        )

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (
            self.intents,
            self.next_nonce,
            self.broadcasts,
            self.refused,
            self.confirmations,
            self.reverts,
            self.fee_bumps,
        ):
            registry.register(metric)


# --- the worker ------------------------------------------------------------------------------
