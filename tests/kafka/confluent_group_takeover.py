"""A consumer group of two confluent-kafka (librdkafka) members against a
ringlog node's Kafka listener, on a topic of 4 partitions holding offsets
0..9 each. Run by tests/it/kafka_groups.rs with the Kafka address, the
topic and the group id.

1. Both members subscribe; once each holds 2 partitions and has read
   offsets 0..4 of them, each commits offset 5 on its partitions.
2. ListGroups and DescribeGroups (AdminClient) see the group Stable with 2
   members.
3. Member a closes (LeaveGroup). Member b takes over all 4 partitions and
   must read offsets 5..9 of each: a's partitions from the committed offset
   (the first offset read there is 5: nothing before it again, nothing
   lost), then commits 10 everywhere.

Prints `split a=<partitions> b=<partitions>`, `described <state> <members>`
and `took-over <partition>:<first offset>..<last offset>` per partition."""
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
COMMIT_AT, END = 5, 10
assigned = {"a": [], "b": []}
seen = {"a": {}, "b": {}}


def member(name):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "member-" + name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        "partition.assignment.strategy": "range",
    })

    def on_assign(_, partitions):
        assigned[name] = sorted(p.partition for p in partitions)

    def on_revoke(_, partitions):
        assigned[name] = []

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    return consumer


def poll(name, consumer):
    message = consumer.poll(0.05)
    if message is None:
        return
    if message.error():
        raise KafkaException(message.error())
    seen[name].setdefault(message.partition(), []).append(message.offset())


def read_up_to(name, partitions, end):
    return all(set(range(end)) <= set(seen[name].get(p, [])) for p in partitions)


members = {"a": member("a"), "b": member("b")}
deadline = time.time() + 60
while not (len(assigned["a"]) == 2 and len(assigned["b"]) == 2
           and read_up_to("a", assigned["a"], COMMIT_AT) and read_up_to("b", assigned["b"], COMMIT_AT)):
    assert time.time() < deadline, ("no 2+2 split", assigned, seen)
    for name, consumer in members.items():
        poll(name, consumer)
print("split a=%s b=%s" % (",".join(map(str, assigned["a"])), ",".join(map(str, assigned["b"]))))
for name, consumer in members.items():
    consumer.commit(offsets=[TopicPartition(topic, p, COMMIT_AT) for p in assigned[name]], asynchronous=False)

admin = AdminClient({"bootstrap.servers": bootstrap})
listed = admin.list_consumer_groups().result(timeout=10)
assert group in [g.group_id for g in listed.valid], listed.valid
described = admin.describe_consumer_groups([group])[group].result(timeout=10)
print("described %s %d" % (described.state.name, len(described.members)))

taken = assigned["a"]
members["a"].close()
seen["b"] = {}
deadline = time.time() + 60
while not (len(assigned["b"]) == 4
           and all(set(range(COMMIT_AT, END)) <= set(seen["b"].get(p, [])) for p in range(4))):
    assert time.time() < deadline, ("no takeover", assigned, seen)
    poll("b", members["b"])
members["b"].commit(offsets=[TopicPartition(topic, p, END) for p in range(4)], asynchronous=False)
for p in taken:
    offsets = seen["b"][p]
    print("took-over %d:%d..%d" % (p, offsets[0], offsets[-1]))
members["b"].close()
