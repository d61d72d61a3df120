"""kafka-python with SASL over TLS against a ringlog node's Kafka listener:
produce three records as one user, consume them back as another by
partition, then again in a consumer group that commits. Prints each value
read by partition, one a line, then "group|VALUES|COMMITTED". Run by tests/it/kafka_auth.rs with the Kafka
address, the CA file, the mechanism, the topic, the producing user and
password, and the consuming user and password."""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, cafile, mechanism, topic = sys.argv[1:5]
producer_user, producer_password, consumer_user, consumer_password = sys.argv[5:9]


def settings(user, password):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL", ssl_cafile=cafile,
                sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password,
                ssl_check_hostname=True, request_timeout_ms=30000)


producer = KafkaProducer(acks="all", **settings(producer_user, producer_password))
sent = [producer.send(topic, value=b"v%d" % i, partition=0) for i in range(3)]
producer.flush()
assert [future.get(timeout=10).offset for future in sent] == [0, 1, 2]
producer.close()
consumer = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=3000,
                         **settings(consumer_user, consumer_password))
partition = TopicPartition(topic, 0)
consumer.assign([partition])
consumer.seek_to_beginning()
for message in consumer:
    print(message.value.decode())
consumer.close()
# The group APIs (FindCoordinator, JoinGroup, SyncGroup, OffsetCommit,
# OffsetFetch, Heartbeat, LeaveGroup) as the consuming user.
member = KafkaConsumer(topic, group_id="python-sasl", auto_offset_reset="earliest", enable_auto_commit=False,
                       consumer_timeout_ms=4000, session_timeout_ms=6000,
                       **settings(consumer_user, consumer_password))
values = ",".join(message.value.decode() for message in member)
member.commit()
print("group|%s|%s" % (values, member.committed(partition)))
member.close()
