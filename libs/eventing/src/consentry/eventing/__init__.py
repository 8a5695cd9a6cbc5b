"""Event plumbing shared by every consentry service.

CloudEvents on Kafka (`envelope`), the event catalogue (`catalogue`), the transactional
outbox and its relay (`outbox`, `relay`), the idempotent inbox (`inbox`), a consumer loop
with dead-lettering (`consumer`), typed settings (`settings`), SQL migrations
(`migrations`) and structured logging without personal data (`logs`).
"""
