"""confluent-kafka (librdkafka) with enable.idempotence=true against a
ringlog node's Kafka listener: produce COUNT records, value v<i> to
partition i % 2, with up to five requests in flight per connection, and
check every delivery report: no error, and per partition the offsets
0, 1, 2, ... in send order (nothing lost, nothing twice). Run by
tests/it/kafka_idempotence.rs with the Kafka address, a topic with two
partitions and COUNT."""
import sys

from confluent_kafka import Producer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "max.in.flight.requests.per.connection": 5,
    "linger.ms": 5,
    "batch.num.messages": 20,
})
reports = []


def delivered(error, message):
    reports.append((error, message.partition(), message.offset(), message.value()))


for i in range(count):
    producer.produce(topic, value=b"v%d" % i, partition=i % 2, on_delivery=delivered)
    producer.poll(0)
left = producer.flush(30)
assert left == 0, "%d records not delivered" % left
assert len(reports) == count, len(reports)
errors = [report for report in reports if report[0] is not None]
assert not errors, errors[:5]
for partition in (0, 1):
    placed = [(offset, value) for _, p, offset, value in reports if p == partition]
    expected = [(n, b"v%d" % i) for n, i in enumerate(i for i in range(count) if i % 2 == partition)]
    assert placed == expected, (partition, placed[:10], expected[:10])
