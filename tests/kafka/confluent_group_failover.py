"""One confluent-kafka (librdkafka) consumer-group member, bootstrapped at a
follower of a ringlog cluster, while the test SIGKILLs the leader (the
group's coordinator). It commits each record synchronously after reading it
(a retriable commit error is retried), then prints
`consumed <partition> <offset> <value>`, flushed at once; each assignment
prints `assigned <partitions>`. It exits 0 once it has consumed COUNT
records, and non-zero if that takes longer than three minutes. Run by
tests/it/kafka_cluster.rs with the Kafka address, the topic, the group and
COUNT."""
import sys
import time

from confluent_kafka import Consumer, KafkaException

bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 300,
    "reconnect.backoff.max.ms": 500,
    "topic.metadata.refresh.interval.ms": 1000,
})


def on_assign(_, partitions):
    print("assigned %s" % ",".join(str(p.partition) for p in partitions), flush=True)


def commit(message, deadline):
    while True:
        try:
            consumer.commit(message=message, asynchronous=False)
            return True
        except KafkaException as error:
            if not error.args[0].retriable() or time.time() > deadline:
                print("commit-failed %d %d %s" % (message.partition(), message.offset(), error), flush=True)
                return False
            time.sleep(0.2)


consumer.subscribe([topic], on_assign=on_assign)
consumed = 0
deadline = time.time() + 180
while consumed < count:
    assert time.time() < deadline, "consumed %d of %d" % (consumed, count)
    message = consumer.poll(0.1)
    if message is None:
        continue
    if message.error():
        print("error %s" % message.error(), file=sys.stderr, flush=True)
        continue
    commit(message, time.time() + 30)
    consumed += 1
    print("consumed %d %d %s" % (message.partition(), message.offset(), message.value().decode()), flush=True)
consumer.close()
