"""A faust App whose consumer waits at most `fetch_max_wait_ms` for a fetch to fill.

faust's aiokafka driver fixes the consumer's `fetch_max_wait_ms` at 1500 ms. Apache Kafka
answers a fetch as soon as data arrives, but the development broker (Tansu) holds every
empty fetch for the whole wait, which would add up to 1.5 s to each notice (measured: about
0.7 s on average; with 20 ms about 10 ms). The override is set on the aiokafka consumer
after faust built it and before it starts, the only place faust leaves open.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait  # read by AIOKafkaConsumer.start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App with a configurable consumer fetch wait."""

    fetch_max_wait_ms: int | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
