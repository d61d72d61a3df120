"""confluent-kafka (librdkafka) with enable.idempotence=true and acks=all
producing through one node's Kafka port of a ringlog cluster while the test
SIGKILLs the leader. Record v<i> goes to partition i % 2, paced a few
milliseconds apart, up to five requests in flight, so batches are in flight
when the leader dies and librdkafka retries them on the new one. Prints
`acked <i> <partition> <offset>` for each successful delivery report,
flushed at once, so the test sees acknowledgements as they come, and
`failed <i> <error>` for a failed one. Exit status 0 only when every record
was delivered. Run by tests/it/kafka_cluster.rs with the Kafka address, a
topic with two partitions and a record count."""
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "max.in.flight.requests.per.connection": 5,
    "linger.ms": 2,
    "batch.num.messages": 10,
    "message.timeout.ms": 120000,
    "request.timeout.ms": 3000,
    "retry.backoff.ms": 100,
    "reconnect.backoff.max.ms": 500,
    "topic.metadata.refresh.interval.ms": 1000,
})
failures = []


def delivered(error, message):
    index = int(message.value()[1:])
    if error is not None:
        failures.append(index)
        print("failed %d %s" % (index, error), flush=True)
        return
    print("acked %d %d %d" % (index, message.partition(), message.offset()), flush=True)


for i in range(count):
    producer.produce(topic, value=b"v%d" % i, partition=i % 2, on_delivery=delivered)
    producer.poll(0)
    time.sleep(0.005)
left = producer.flush(150)
assert left == 0, "%d records not delivered" % left
assert not failures, "%d records failed, first %s" % (len(failures), failures[:5])
