"""Refused messages: to the dead-letter topic, with why, or to the log when there is none.

A dead letter is the original record (key and value bytes unchanged, its headers
kept) with headers added: `livefeat-reason`, `livefeat-field`, `livefeat-detail`,
`livefeat-source-topic`, `livefeat-source-partition`, `livefeat-source-offset`.
A batch's dead letters are sent together and acknowledged before the batch is
committed, so a dead letter is never lost to a crash.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from service import metrics
from service.kafka.messages import BadMessage

log = logging.getLogger(__name__)


def dead_letter_headers(record: Any, bad: BadMessage) -> list[tuple[str, bytes]]:
    """The record's own headers, then ours naming the reason and the source."""
    ours = [
        ("livefeat-reason", bad.reason),
        ("livefeat-field", bad.field),
        ("livefeat-detail", bad.detail[:500]),
        ("livefeat-source-topic", record.topic),
        ("livefeat-source-partition", str(record.partition)),
        ("livefeat-source-offset", str(record.offset)),
    ]
    return [*(record.headers or ()), *((k, v.encode()) for k, v in ours)]


class DeadLetters:
    """Where bad messages go: `producer` and `topic`, or the log when `topic` is None."""

    def __init__(self, producer: AIOKafkaProducer | None, topic: str | None) -> None:
        if (producer is None) != (topic is None):
            raise ValueError("a dead-letter topic needs a producer, and only it")
        self.producer = producer
        self.topic = topic

    def __repr__(self) -> str:
        return f"<DeadLetters {self.topic or 'log only'}>"

    async def send(self, letters: list[tuple[Any, BadMessage]]) -> None:
        """Send refused records with why (or log them when there is no topic) and wait for
        the broker's acks. Raises KafkaError; a retry sends them all again (a dead letter
        may then be there twice: at least once)."""
        if self.producer is None or self.topic is None:
            for record, bad in letters:
                log.warning("bad message %s[%d]@%d: %s %s: %s", record.topic, record.partition,
                            record.offset, bad.reason, bad.field, bad.detail)  # fmt: skip
            return
        futures = [
            await self.producer.send(
                self.topic, record.value, key=record.key, headers=dead_letter_headers(record, bad)
            )
            for record, bad in letters
        ]
        await asyncio.gather(*futures)
        for record, _ in letters:
            metrics.KAFKA_DEAD_LETTERED.labels(record.topic).inc()
