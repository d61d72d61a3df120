"""kafka-python against a ringlog node's Kafka listener: create a topic,
produce with keys, headers and timestamps to chosen partitions (acks=all),
consume one partition from the beginning, look offsets up by time, read the
partition's bounds, delete the topic. Prints one line per record read:
partition|offset|key|value|timestamp|headers. Exit status 0 only when every
step answered as expected. Run by tests/it/kafka.rs with the Kafka address
and a topic name."""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
# Idempotent: InitProducerId, then producer id and sequences on every batch.
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
sent = [
    producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2,
                  headers=[("h", b"x"), ("h", b"y")], timestamp_ms=1700000000000 + i)
    for i in range(6)
]
producer.flush()
placed = [(future.get(timeout=10).partition, future.get(timeout=10).offset) for future in sent]
assert placed == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)], placed
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
one = TopicPartition(topic, 1)
consumer.assign([one])
consumer.seek_to_beginning()
for message in consumer:
    headers = ",".join("%s=%s" % (name, value.decode()) for name, value in message.headers)
    print("%d|%d|%s|%s|%d|%s" % (message.partition, message.offset, message.key.decode(),
                                 message.value.decode(), message.timestamp, headers))
found = consumer.offsets_for_times({one: 1700000000002})[one]
assert (found.offset, found.timestamp) == (1, 1700000000003), found
assert consumer.end_offsets([one]) == {one: 3}
assert consumer.beginning_offsets([one]) == {one: 0}
admin.delete_topics([topic])
