"""Produces COUNT messages with kafka-python on its defaults (3.x turns
idempotence on), message i to partition i % PARTITIONS with value "i".
Prints "idempotent <bool>", then "acked N" as acknowledgements arrive and
"done acked=N failed=M" at the end. Used by tests/idempotence.rs, which
kills and restarts the broker while this runs."""

import sys
import threading

from kafka import KafkaProducer

IN_FLIGHT_MAX = 1000


def main():
    bootstrap, topic, count, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    print(f"idempotent {producer.config['enable_idempotence']}", flush=True)
    lock = threading.Condition()
    state = {"acked": 0, "failed": 0, "errors": []}

    def on_ok(_metadata):
        with lock:
            state["acked"] += 1
            if state["acked"] % 250 == 0:
                print(f"acked {state['acked']}", flush=True)
            lock.notify_all()

    def on_error(error):
        with lock:
            state["failed"] += 1
            if len(state["errors"]) < 5:
                state["errors"].append(repr(error))
            lock.notify_all()

    for i in range(count):
        with lock:
            # Keep the stream going but bounded, so kills land mid-stream.
            lock.wait_for(lambda: i - state["acked"] - state["failed"] < IN_FLIGHT_MAX, timeout=120)
        future = producer.send(topic, value=str(i).encode(), partition=i % partitions)
        future.add_callback(on_ok)
        future.add_errback(on_error)
    producer.flush(timeout=120)
    producer.close(timeout=30)
    print(f"done acked={state['acked']} failed={state['failed']} errors={state['errors']}", flush=True)


if __name__ == "__main__":
    main()
