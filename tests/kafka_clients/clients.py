"""Kafka's own clients against Brook's Kafka listeners (run by run.sh).

confluent-kafka (librdkafka) and kafka-python each produce with every
codec and read back by assigned partitions (no consumer group), each
reads what the other wrote, and librdkafka's idempotent producer keeps
order and writes nothing twice while the partition's leader is killed.

usage: clients.py KAFKA_BOOTSTRAP 1=PID,2=PID,3=PID
"""

import os
import signal
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPartition

BOOTSTRAP = sys.argv[1]
PIDS = {int(k): int(v) for k, v in (item.split("=") for item in sys.argv[2].split(","))}
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def fail(message):
    print(f"kafka clients: FAILED: {message}")
    sys.exit(1)


def read_partition(topic, partition, until_count, timeout=30):
    """Values of one partition from its start, by librdkafka (assigned)."""
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, 0)])
    values, offsets = [], []
    deadline = time.time() + timeout
    while len(values) < until_count and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            print(f"  consumer: {message.error()}")
            continue
        values.append(message.value().decode())
        offsets.append(message.offset())
    consumer.close()
    if offsets != list(range(len(offsets))):
        fail(f"{topic}-{partition}: offsets not contiguous from 0")
    return values


def librdkafka_codecs():
    sent = []
    for codec in CODECS:
        errors = []
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "compression.type": codec,
                             "enable.idempotence": True, "linger.ms": 5})
        for i in range(200):
            value = f"rdkafka-{codec}-{i}"
            producer.produce("codecs", value=value.encode(), key=str(i).encode(), partition=1,
                             on_delivery=lambda error, _message: errors.append(error) if error else None)
            sent.append(value)
        producer.flush(30)
        if errors:
            fail(f"librdkafka {codec}: {errors[:3]}")
    values = read_partition("codecs", 1, len(sent))
    if values != sent:
        fail(f"librdkafka read {len(values)} of {len(sent)} records, or not as sent")
    print(f"kafka clients: confluent-kafka {__import__('confluent_kafka').version()[0]} "
          f"(librdkafka {__import__('confluent_kafka').libversion()[0]}) produced and read "
          f"{len(sent)} records with each codec")
    return sent


def kafka_python_codecs(librdkafka_sent):
    sent = []
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type=codec)
        for i in range(100):
            value = f"kafka-python-{codec}-{i}"
            producer.send("codecs", value=value.encode(), partition=2).get(timeout=30)
            sent.append(value)
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([KafkaPartition("codecs", 2), KafkaPartition("codecs", 1)])
    consumer.seek_to_beginning()
    by_partition = {1: [], 2: []}
    for message in consumer:
        by_partition[message.partition].append(message.value.decode())
    consumer.close()
    if by_partition[2] != sent:
        fail(f"kafka-python read {len(by_partition[2])} of {len(sent)} of its own records, or not as sent")
    if by_partition[1] != librdkafka_sent:
        fail("kafka-python did not read librdkafka's records as sent")
    if read_partition("codecs", 2, len(sent)) != sent:
        fail("librdkafka did not read kafka-python's records as sent")
    print(f"kafka clients: kafka-python {__import__('kafka').__version__} produced and read {len(sent)} records; "
          "each client read the other's")


def idempotent_through_a_leader_kill():
    admin = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused"})
    leader = admin.list_topics("order", timeout=10).topics["order"].partitions[0].leader
    admin.close()
    acked, errors = [], []

    def delivered(error, message):
        if error:
            errors.append(error)
        else:
            acked.append(int(message.value()))

    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 2, "message.timeout.ms": 60000})
    total, killed = 20000, False
    for i in range(total):
        while True:
            try:
                producer.produce("order", value=str(i).encode(), partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if not killed and len(acked) >= 5000:
            os.kill(PIDS[leader], signal.SIGKILL)
            killed = True
        if i % 100 == 0:
            # Paced, so the kill falls in the middle of the stream.
            producer.poll(0.02)
    producer.flush(90)
    if not killed:
        fail("the leader was never killed (fewer than 5000 acknowledged)")
    values = [int(value) for value in read_partition("order", 0, len(acked), timeout=60)]
    missing = set(acked) - set(values)
    if missing:
        fail(f"{len(missing)} acknowledged records missing after the leader kill, e.g. {sorted(missing)[:5]}")
    if len(values) != len(set(values)):
        fail(f"{len(values) - len(set(values))} records written twice")
    if values != sorted(values):
        fail("records out of order")
    print(f"kafka clients: librdkafka's idempotent producer: leader (broker {leader}) killed after 5000 acks; "
          f"{len(acked)} acknowledged, {len(errors)} failed, 0 lost, 0 duplicated, in order")


def admin_apis():
    """librdkafka's AdminClient: topics, partitions, configs, the cluster."""
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics([NewTopic("admin", num_partitions=2, replication_factor=3)]).values():
        future.result(20)
    for future in admin.create_partitions([NewPartitions("admin", 4)]).values():
        future.result(20)
    partitions = len(admin.list_topics("admin", timeout=10).topics["admin"].partitions)
    if partitions != 4:
        fail(f"admin: {partitions} partitions after growing to 4")
    resource = ConfigResource("topic", "admin", incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(20)
    configs = list(admin.describe_configs([ConfigResource("topic", "admin")]).values())[0].result(20)
    if configs.get("retention.ms") is None or configs["retention.ms"].value != "3600000":
        fail(f"admin: retention.ms is {configs.get('retention.ms')}")
    cluster = admin.describe_cluster().result(20)
    if len(cluster.nodes) != 3 or cluster.controller is None:
        fail(f"admin: describe_cluster gave {cluster.nodes}, controller {cluster.controller}")
    for future in admin.delete_topics(["admin"]).values():
        future.result(20)
    print("kafka clients: librdkafka's AdminClient created, grew, configured, described and deleted a topic")


if __name__ == "__main__":
    admin_apis()
    librdkafka_sent = librdkafka_codecs()
    kafka_python_codecs(librdkafka_sent)
    idempotent_through_a_leader_kill()
