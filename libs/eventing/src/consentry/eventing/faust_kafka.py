"""faust's aiokafka transport on our terms, for the faust workers (the list processor, the
subprocessor notifier): `App` is a `faust.App` whose consumer

- waits at most `fetch_max_wait_ms` for a fetch to fill, and answers once `fetch_min_bytes`
  arrived. faust fixes the wait at 1,500 ms; Apache Kafka answers a fetch as soon as data
  arrives, but the development broker (Tansu) holds every empty fetch for the whole wait,
  which added up to 1.5 s to each event (measured: about 0.7 s on average; with 20 ms about
  10 ms). The values are set on the aiokafka consumer after faust built it and before it
  starts, the only place faust leaves open;
- re-reads from its beginning a partition whose log the broker lost under it
  (`consumer.LogLossGuard`, as `EventConsumer` and the audit appender do), and forgets
  faust's own bookkeeping of that partition's offsets, which belongs to the lost log: faust
  would otherwise drop the re-read records as read already and commit nothing below the
  old offset.

`linger_batches` is faust's `Stream.noack_take` with the window of a Kafka producer's
`linger.ms` (`consentry.eventing.batching.Linger`): a batch closes when full or when its
oldest event has waited `within`, and events keep arriving while the agent works through
the previous batch.

Requires the `faust` extra of consentry-eventing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from consentry.eventing.batching import Linger
from consentry.eventing.consumer import LogLossGuard


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait  # read by AIOKafkaConsumer.start()
        min_bytes = getattr(self.app, "fetch_min_bytes", None)
        if min_bytes is not None:
            consumer._fetch_min_bytes = min_bytes
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    _log_loss: LogLossGuard | None = None

    @property
    def log_loss(self) -> LogLossGuard:
        if self._log_loss is None:
            self._log_loss = LogLossGuard(str(self.app.conf.id))
        return self._log_loss

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:  # noqa: ASYNC109 (faust's signature)
        assigned = self.assignment()
        for tp in self.log_loss.lost({tp: self.highwater(tp) for tp in assigned}):
            await self._rewind(tp)
        records = await super()._getmany(active_partitions, timeout)
        self.log_loss.read(records)
        return records

    async def _rewind(self, tp: TP) -> None:
        self._committed_offset[tp] = None
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        self._gap[tp].clear()
        await self.seek(tp, 0)  # also forgets the last offset read (faust's `_read_offset`)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A faust.App on our transport; `None` keeps aiokafka's value (faust's wait: 1,500 ms)."""

    fetch_max_wait_ms: int | None = None
    fetch_min_bytes: int | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


async def linger_batches(stream: Any, max_items: int, within: float) -> AsyncIterator[list[Any]]:
    """The stream's events in batches (`Linger`), none acknowledged: the caller acks each
    event (`stream.ack`) once its effect is durable, as with `noack_take`.

    The stream is drained in the background as faust's own `take` does it (a processor
    fills the buffer; the passive drainer iterates the stream), but the processor only
    waits while the buffer is full, never while the agent works."""
    linger: Linger[Any] = Linger(max_items, within)

    async def add(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("faust gave a value without its event")
        await linger.put(event)
        return value

    enable_acks, stream.enable_acks = stream.enable_acks, False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # as faust's own take does
    try:
        while not stream.should_stop:
            yield await linger.get()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
