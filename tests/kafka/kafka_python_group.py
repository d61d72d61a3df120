"""A kafka-python consumer group member against a ringlog node's Kafka
listener: subscribe to TOPIC in GROUP (auto.offset.reset earliest), read
until idle, commit, and print the records read, sorted, one per line as
partition|offset|value, then the committed offset of each partition as
committed|partition|offset. Run by tests/it/kafka_groups.rs with the Kafka
address, the topic (2 partitions) and the group."""
import sys

from kafka import KafkaConsumer, TopicPartition

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=4000, session_timeout_ms=6000)
records = sorted((m.partition, m.offset, m.value.decode()) for m in consumer)
consumer.commit()
for partition, offset, value in records:
    print("%d|%d|%s" % (partition, offset, value))
for partition in (0, 1):
    print("committed|%d|%s" % (partition, consumer.committed(TopicPartition(topic, partition))))
consumer.close()
