#!/usr/bin/env python3
"""End-to-end latency of a Kafka consumer of several partitions.

Usage: tools/kafka-latency.py BOOTSTRAP TOPIC PARTITIONS MESSAGES

A confluent-kafka (librdkafka) consumer is assigned every partition of
TOPIC (created beforehand) from its end, with librdkafka's defaults
(fetch.wait.max.ms 500, fetch.min.bytes 1). A producer sends MESSAGES
small records, 20 ms apart, to the partitions in turn, each carrying the
time it was sent; each is flushed (acks=1) before the next. Prints one
line of JSON: p50, p90, p99 and max of (received - sent) in ms. The
consumer's fetch is one request for all partitions, so this is the
latency of the broker's multi-partition long poll.
"""
import json
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_END


def main():
    bootstrap, topic, partitions, messages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    latencies_ms = []
    done = threading.Event()

    def consume():
        while len(latencies_ms) < messages:
            message = consumer.poll(0.1)
            if message is None or message.error():
                continue
            latencies_ms.append((time.monotonic_ns() - int(message.value())) / 1e6)
        done.set()

    # Let the assignment take effect (the consumer resolves OFFSET_END).
    for _ in range(20):
        consumer.poll(0.1)
    reader = threading.Thread(target=consume)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0})
    for index in range(messages):
        producer.produce(topic, value=str(time.monotonic_ns()).encode(), partition=index % partitions)
        producer.flush(5)
        time.sleep(0.02)
    if not done.wait(30):
        print(json.dumps({"error": f"received {len(latencies_ms)} of {messages}"}))
        sys.exit(1)
    reader.join()
    consumer.close()
    ordered = sorted(latencies_ms)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)
    print(json.dumps({"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 2)}))


if __name__ == "__main__":
    main()
