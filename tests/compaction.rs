//! A compacted topic created through the admin API, driven by librdkafka:
//! after many values per key the log ends with the latest value of every
//! key and far fewer records than were written; keyless records are
//! refused with INVALID_RECORD.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Daemon, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "latest";
const KEYS: usize = 100;
const WRITTEN: usize = 20_000;

/// Every record of partition 0 up to the high watermark, as (key, value).
fn read_all(bootstrap: &str) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "read stalled after {} records",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        let text = |bytes: Option<&[u8]>| String::from_utf8(bytes.unwrap().to_vec()).unwrap();
        records.push((text(message.key()), text(message.payload())));
        if message.offset() + 1 >= high {
            return records;
        }
    }
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_per_key() {
    let daemon = Daemon::start("");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "65536")
        .set("max.message.bytes", "16384")
        .set("min.cleanable.dirty.ratio", "0.1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = runtime
        .block_on(admin.create_topics([&topic], &options))
        .unwrap();
    assert_eq!(created[0], Ok(TOPIC.to_string()));

    let outcome = std::sync::Arc::new(std::sync::Mutex::new(None));
    let producer: BaseProducer<KeylessOutcome> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("linger.ms", "5")
        .set("batch.size", "8000")
        .create_with_context(KeylessOutcome(outcome.clone()))
        .unwrap();
    let mut last_value = HashMap::new();
    for i in 0..WRITTEN {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        loop {
            match producer.send(BaseRecord::to(TOPIC).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        last_value.insert(key, value);
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(
        *outcome.lock().unwrap(),
        Some(Ok(())),
        "every delivery succeeded"
    );

    // A keyless record is refused.
    let delivered = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keyless: BaseProducer<KeylessOutcome> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("message.send.max.retries", "0")
        .create_with_context(KeylessOutcome(delivered.clone()))
        .unwrap();
    keyless
        .send(BaseRecord::<(), str>::to(TOPIC).payload("no key"))
        .unwrap();
    keyless.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(
        *delivered.lock().unwrap(),
        Some(Err(RDKafkaErrorCode::InvalidRecord))
    );

    // The cleaner runs in the background: wait for it, with a deadline.
    let mut records = Vec::new();
    let cleaned = wait_until(Duration::from_secs(90), || {
        records = read_all(&daemon.bootstrap());
        records.len() < WRITTEN / 5
    });
    assert!(
        cleaned,
        "{} of {WRITTEN} records still there",
        records.len()
    );
    let mut latest = HashMap::new();
    for (key, value) in &records {
        latest.insert(key.clone(), value.clone());
    }
    assert_eq!(latest, last_value, "every key ends with its last value");
    let log = daemon.log();
    assert!(log.contains("event=\"log_cleaned\""), "{log}");
}

struct KeylessOutcome(std::sync::Arc<std::sync::Mutex<Option<Result<(), RDKafkaErrorCode>>>>);

impl rdkafka::ClientContext for KeylessOutcome {}

/// The first delivery error, else Ok once something was delivered.
impl rdkafka::producer::ProducerContext for KeylessOutcome {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((KafkaError::MessageProduction(code), _)) => Err(*code),
            Err((other, _)) => panic!("unexpected delivery error {other}"),
        };
        let mut first = self.0.lock().unwrap();
        if !matches!(*first, Some(Err(_))) {
            *first = Some(outcome);
        }
    }
}
