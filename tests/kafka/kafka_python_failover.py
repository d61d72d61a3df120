"""kafka-python producing through one node's Kafka port of a ringlog
cluster while the test SIGKILLs the leader: acks=all, one record at a time,
each sent only after the previous one was acknowledged, retried until
delivered. The client finds the leader (and, after the kill, the new one)
through Metadata only: it is given a single bootstrap address. Prints
`acked <i> <offset>` for record `v<i>` of partition 0, flushed at once, so
the test sees the acknowledgements as they come. Exit status 0 only when
every record was acknowledged. Run by tests/it/kafka_cluster.rs with the
Kafka address, a topic name and a record count."""
import sys
import time

from kafka import KafkaProducer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Idempotence off on purpose (the idempotent failover is
# confluent_failover.py): a retry after a lost ack may store a record
# twice; this test checks that nothing acknowledged is lost.
producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    acks="all",
    enable_idempotence=False,
    retries=1000,
    retry_backoff_ms=100,
    request_timeout_ms=3000,
    delivery_timeout_ms=60000,
    max_in_flight_requests_per_connection=1,
    reconnect_backoff_max_ms=500,
    linger_ms=0,
)
for i in range(count):
    placed = producer.send(topic, value=b"v%d" % i, partition=0).get(timeout=60)
    print("acked %d %d" % (i, placed.offset), flush=True)
    time.sleep(0.01)
producer.close()
