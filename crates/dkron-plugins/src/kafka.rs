//! `kafka`: produce one record, Dkron's keys: `brokerAddress` (comma list of `host:port`),
//! `topic`, `key`, `message`, `tlsEnable`, `tlsInsecureSkipVerify`, `saslUsername`,
//! `saslPassword`, `saslMechanism` (`sha256` | `sha512`), `debug`.
//!
//! As in Dkron, the run succeeds once every in-sync replica acknowledged the record
//! (acks = all). Where Dkron differs from what it meant: it sends an empty key when `key` is
//! not set, which its hash partitioner puts on one fixed partition; here a record without a
//! key has no key and goes to the topic's partitions in turn, while a record with a key lands
//! on the partition Dkron's (sarama's) hash partitioner picks for it, so keyed records keep
//! their partition across the move. Records carry the run's identity as `x-dkron-*` headers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rskafka::chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use tokio::time::Instant;

use crate::pool::{Closable, Closing};
use crate::{Connections, Outcome, Run, get};

/// Dkron's success line.
const PRODUCED: &str = "Result: successfully produced the message on Kafka broker\n";
/// How long a topic's partition list is trusted before it is asked again.
const METADATA_TTL: Duration = Duration::from_secs(30);

/// One client of a Kafka cluster with what runs learned of it.
pub struct Brokers {
    client: Client,
    /// Partitions by topic, with when they were read.
    partitions: Mutex<HashMap<String, (Vec<i32>, Instant)>>,
    producers: tokio::sync::Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
    /// Where the next key-less record of each topic goes.
    turn: AtomicUsize,
}

impl Closable for Arc<Brokers> {
    fn close_now(self) -> Closing {
        // rskafka closes its broker connections when the client is dropped.
        Box::pin(async move { drop(self) })
    }
}

pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let brokers = get(config, "brokerAddress");
    if brokers.is_empty() {
        problems.push((
            "brokerAddress".to_owned(),
            "brokerAddress is empty".to_owned(),
        ));
    } else if let Some(bad) = broker_list(brokers).into_iter().find(|b| {
        b.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    }) {
        problems.push((
            "brokerAddress".to_owned(),
            format!("brokerAddress \"{bad}\" is not host:port"),
        ));
    }
    if get(config, "topic").is_empty() {
        problems.push(("topic".to_owned(), "topic is empty".to_owned()));
    }
    if let Err(e) = sasl(config) {
        problems.push(("saslMechanism".to_owned(), e));
    }
    problems
}

fn broker_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Dkron's SASL reading: on when both user and password are set, SCRAM only.
fn sasl(config: &BTreeMap<String, String>) -> Result<Option<SaslConfig>, String> {
    let (user, password) = (get(config, "saslUsername"), get(config, "saslPassword"));
    if user.is_empty() || password.is_empty() {
        return Ok(None);
    }
    let credentials = Credentials::new(user.to_owned(), password.to_owned());
    match get(config, "saslMechanism") {
        "sha256" => Ok(Some(SaslConfig::ScramSha256(credentials))),
        "sha512" => Ok(Some(SaslConfig::ScramSha512(credentials))),
        _ => Err("invalid SASL mechanism, must be 'sha256' or 'sha512'".to_owned()),
    }
}

/// The partition sarama's default hash partitioner picks for `key` among `count`:
/// FNV-1a 32 of the key, as a signed 32-bit number, modulo the count, made non-negative.
pub fn hash_partition(key: &[u8], count: usize) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let count = i32::try_from(count.max(1)).unwrap_or(i32::MAX);
    ((hash as i32) % count).unsigned_abs() as usize
}

pub async fn execute(
    config: &BTreeMap<String, String>,
    run: &Run,
    connections: &Connections,
    bound: Duration,
) -> Outcome {
    let tls = get(config, "tlsEnable") == "true";
    let insecure = get(config, "tlsInsecureSkipVerify") == "true";
    let sasl = sasl(config).map_err(|e| format!("{e}\n"))?;
    let key = format!(
        "{}\n{tls}\n{insecure}\n{}\n{}\n{}",
        get(config, "brokerAddress"),
        get(config, "saslUsername"),
        get(config, "saslPassword"),
        get(config, "saslMechanism")
    );
    let pool = &connections.pools().kafka;
    let connect = || async {
        let mut builder = ClientBuilder::new(broker_list(get(config, "brokerAddress")))
            .client_id("dkron")
            .backoff_config(rskafka::BackoffConfig {
                // Give up before the run's bound, so the output says why.
                deadline: Some((bound - bound / 5).min(Duration::from_secs(10))),
                ..Default::default()
            });
        if tls {
            builder = builder.tls_config(Arc::new(crate::tls::client_config(insecure)));
        }
        if let Some(sasl) = sasl.clone() {
            builder = builder.sasl_config(sasl);
        }
        builder.build().await.map(|client| {
            Arc::new(Brokers {
                client,
                partitions: Mutex::default(),
                producers: Default::default(),
                turn: AtomicUsize::new(0),
            })
        })
    };
    let lease = pool
        .get(&key, connect)
        .await
        .map_err(|e| format!("kafka: cannot reach the brokers: {e}\n"))?;
    let brokers = lease.conn.clone();
    let topic = get(config, "topic");
    let outcome = produce(&brokers, topic, config, run).await;
    if outcome.is_err() {
        // A broker change or an expired session: the next run starts from fresh metadata.
        pool.discard(&key, &brokers);
    }
    outcome
}

async fn produce(
    brokers: &Brokers,
    topic: &str,
    config: &BTreeMap<String, String>,
    run: &Run,
) -> Outcome {
    let partitions = partitions(brokers, topic).await?;
    let record_key = get(config, "key");
    let index = if record_key.is_empty() {
        brokers.turn.fetch_add(1, Ordering::Relaxed) % partitions.len()
    } else {
        hash_partition(record_key.as_bytes(), partitions.len())
    };
    let partition = partitions[index];
    let producer = {
        let mut producers = brokers.producers.lock().await;
        match producers.get(&(topic.to_owned(), partition)) {
            Some(p) => p.clone(),
            None => {
                let p = brokers
                    .client
                    .partition_client(topic, partition, UnknownTopicHandling::Error)
                    .await
                    .map_err(|e| {
                        format!("kafka: topic \"{topic}\" partition {partition}: {e}\n")
                    })?;
                let p = Arc::new(p);
                producers.insert((topic.to_owned(), partition), p.clone());
                p
            }
        }
    };
    let record = Record {
        key: (!record_key.is_empty()).then(|| record_key.as_bytes().to_vec()),
        value: Some(get(config, "message").as_bytes().to_vec()),
        headers: run
            .headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect(),
        timestamp: now(),
    };
    let offsets = producer
        .produce(vec![record], Compression::NoCompression)
        .await
        .map_err(|e| {
            format!("kafka: the brokers did not acknowledge the message on \"{topic}\": {e}\n")
        })?;
    let offset = offsets.first().copied().unwrap_or(-1);
    if !get(config, "debug").is_empty() {
        tracing::info!(job = %run.job_name, topic, partition, offset, "kafka: message acknowledged");
    }
    Ok(format!(
        "{PRODUCED}partition {partition}, offset {offset}\n"
    ))
}

/// The topic's partitions, sorted (as sarama's partitioner sees them).
async fn partitions(brokers: &Brokers, topic: &str) -> Result<Vec<i32>, String> {
    if let Some((list, read)) = brokers
        .partitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(topic)
        && read.elapsed() < METADATA_TTL
    {
        return Ok(list.clone());
    }
    let topics = brokers
        .client
        .list_topics()
        .await
        .map_err(|e| format!("kafka: cannot read the brokers' topics: {e}\n"))?;
    let list: Vec<i32> = topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.into_iter().collect())
        .unwrap_or_default();
    if list.is_empty() {
        return Err(format!(
            "kafka: topic \"{topic}\" does not exist on the brokers; create it first\n"
        ));
    }
    brokers
        .partitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(topic.to_owned(), (list.clone(), Instant::now()));
    Ok(list)
}

fn now() -> DateTime<Utc> {
    let millis = SystemTime::UNIX_EPOCH
        .elapsed()
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn dkron_texts_name_the_key() {
        assert_eq!(
            validate_config(&cfg(&[])),
            vec![
                (
                    "brokerAddress".to_owned(),
                    "brokerAddress is empty".to_owned()
                ),
                ("topic".to_owned(), "topic is empty".to_owned()),
            ]
        );
        let sasl = cfg(&[
            ("brokerAddress", "k1:9092,k2:9092"),
            ("topic", "t"),
            ("saslUsername", "u"),
            ("saslPassword", "p"),
        ]);
        assert_eq!(
            validate_config(&sasl),
            vec![(
                "saslMechanism".to_owned(),
                "invalid SASL mechanism, must be 'sha256' or 'sha512'".to_owned()
            )]
        );
        let bad = cfg(&[("brokerAddress", "k1:9092,k2"), ("topic", "t")]);
        assert_eq!(
            validate_config(&bad)[0].1,
            "brokerAddress \"k2\" is not host:port"
        );
        let ok = cfg(&[("brokerAddress", "127.0.0.1:9092"), ("topic", "t")]);
        assert!(validate_config(&ok).is_empty());
    }

    /// Sarama's hash partitioner, from its own test vectors and Go's fnv package.
    #[test]
    fn keyed_records_land_where_dkron_put_them() {
        // fnv32a("") = 0x811c9dc5, negative as int32: Dkron's one partition for every
        // key-less message.
        assert_eq!(
            hash_partition(b"", 50),
            (0x811c_9dc5_u32 as i32 % 50).unsigned_abs() as usize
        );
        // fnv32a("a") = 0xe40c292c.
        assert_eq!(
            hash_partition(b"a", 7),
            ((0xe40c_292c_u32 as i32) % 7).unsigned_abs() as usize
        );
        for n in 1..20 {
            assert!(hash_partition(b"job1", n) < n);
        }
        assert_eq!(hash_partition(b"x", 0), 0);
    }

    #[tokio::test]
    async fn a_dead_broker_fails_the_run_and_says_why() {
        let config = cfg(&[
            ("brokerAddress", &format!("127.0.0.1:{}", dead_port())),
            ("topic", "t"),
            ("timeout", "3"),
        ]);
        let c = Connections::default();
        let err = crate::execute("kafka", &config, &run(), &c)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            err.starts_with("kafka: cannot reach the brokers: "),
            "{err}"
        );
    }
}
