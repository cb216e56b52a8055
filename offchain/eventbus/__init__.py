"""Event bus: transactional outbox in PostgreSQL, fanned out on Redis Streams consumer groups.

publish(session, "credit.loan.repaid", {...}, key=loan_id)      # in your transaction
publish_many(session, [OutgoingEvent(topic, payload, key=...), ...])  # bulk, one statement
publish_once(session, topic, {...}, consumer=..., event_id=...)  # claim + publish, first time only
run_relay(db, redis, settings.events, stop)                      # orchestration runs it
StreamConsumer(redis, group=..., name=..., topics=[...],
               handler=idempotent(db, "ledger.repayments", handle)).run(stop)
replay(db, redis, names, first_id=..., last_id=...)             # send a range again
"""

from offchain.eventbus.consumer import StreamConsumer
from offchain.eventbus.idempotent import claim_event, idempotent
from offchain.eventbus.messages import Event, StreamNames
from offchain.eventbus.outbox import OutgoingEvent, publish, publish_many, publish_once
from offchain.eventbus.relay import relay_batch, replay, run_relay

__all__ = [
    "Event",
    "OutgoingEvent",
    "StreamConsumer",
    "StreamNames",
    "claim_event",
    "idempotent",
    "publish",
    "publish_many",
    "publish_once",
    "relay_batch",
    "replay",
    "run_relay",
]
