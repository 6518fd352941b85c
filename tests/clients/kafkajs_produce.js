// Produces COUNT messages with KafkaJS's idempotent producer, message i to
// partition i % PARTITIONS with value "i", CHUNK messages per send. Prints
// "acked N" after each send and "done acked=N failed=M" at the end. Used by
// tests/idempotence.rs, which kills and restarts the broker while this runs.
const { Kafka, logLevel } = require('kafkajs');

const CHUNK = 50;

async function main() {
  const [bootstrap, topic, countText, partitionsText] = process.argv.slice(2);
  const count = Number(countText);
  const partitions = Number(partitionsText);
  const kafka = new Kafka({ clientId: 'sluice-test', brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  let acked = 0;
  let failed = 0;
  let firstError = '';
  for (let start = 0; start < count; start += CHUNK) {
    const messages = [];
    for (let i = start; i < Math.min(start + CHUNK, count); i++) {
      messages.push({ partition: i % partitions, value: String(i) });
    }
    try {
      await producer.send({ topic, acks: -1, messages });
      acked += messages.length;
      console.log(`acked ${acked}`);
    } catch (error) {
      failed += messages.length;
      if (!firstError) firstError = String(error);
      // A failed send would leave a gap: stop here, the test reports it.
      break;
    }
  }
  await producer.disconnect();
  console.log(`done acked=${acked} failed=${failed} errors=${firstError}`);
}

main().catch((error) => {
  console.log(`done acked=0 failed=1 errors=${error}`);
  process.exit(1);
});
