"""Commit one offset with kafka-python outside group management (the
partition assigned by hand, so the OffsetCommit carries generation -1) and
print "committed OFFSET" the moment the commit is acknowledged, then wait to
be killed (exiting takes time the leader must not get); the caller
(tests/it/commit_failover.rs) SIGKILLs the leader on that line. Arguments:
the Kafka address, the topic, the group, the partition, the offset."""
import sys
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
partition, offset = int(sys.argv[4]), int(sys.argv[5])
consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
assigned = TopicPartition(topic, partition)
consumer.assign([assigned])
# Synchronous: returns only once the coordinator acknowledged (raises otherwise).
consumer.commit({assigned: OffsetAndMetadata(offset, "", -1)})
print("committed %d" % offset, flush=True)
time.sleep(120)  # the caller kills it
