//! `rabbitmq`: publish one message, Dkron's keys: `url` (AMQP URL with vhost), `exchange`,
//! `queue.name` (also the routing key), `queue.create`, `queue.durable`, `queue.auto_delete`,
//! `queue.exclusive`, `message.body`, `message.base64Body`, `message.content_type`,
//! `message.delivery_mode`, `message.messageId`.
//!
//! Dkron publishes without confirms and reports success for a message the broker dropped.
//! Here the channel is in confirm mode and the message is `mandatory`: the run succeeds only
//! on the broker's ack for a message it routed to a queue; a nack, or a message returned
//! unroutable (no queue bound to that exchange and routing key), fails the run and says so.
//! The message carries the run's identity in its headers (`x-dkron-*`).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::pool::{Closable, Closing};
use crate::{Connections, Outcome, Run, get, parse_bool};

impl Closable for Arc<Connection> {
    fn close_now(self) -> Closing {
        Box::pin(async move {
            let _ = self.close(200, "idle".into()).await;
        })
    }
}

/// What one run publishes, read from the config.
struct Message {
    body: Vec<u8>,
    content_type: String,
    delivery_mode: u8,
    message_id: String,
}

pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let url = get(config, "url");
    if url.is_empty() {
        problems.push(("url".to_owned(), "RabbitMQ url is empty".to_owned()));
    } else if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
        problems.push((
            "url".to_owned(),
            format!("url is not an AMQP URL (amqp://user:password@host:5672/vhost): {e}"),
        ));
    }
    if get(config, "queue.name").is_empty() {
        problems.push((
            "queue.name".to_owned(),
            "RabbitMQ queue name is empty".to_owned(),
        ));
    }
    for key in [
        "queue.create",
        "queue.durable",
        "queue.auto_delete",
        "queue.exclusive",
    ] {
        let value = get(config, key);
        if !value.is_empty() && parse_bool(value).is_none() {
            problems.push((
                key.to_owned(),
                format!("{key} must be true or false, got \"{value}\""),
            ));
        }
    }
    if let Err((key, e)) = message(config) {
        problems.push((key.to_owned(), e));
    }
    problems
}

/// Dkron's reading of the message keys; `(key, problem)` when they do not make a message.
fn message(config: &BTreeMap<String, String>) -> Result<Message, (&'static str, String)> {
    if !get(config, "message.body").is_empty() && !get(config, "message.base64Body").is_empty() {
        return Err((
            "message.base64Body",
            "RabbitMQ message.body and message.base64Body are both set".to_owned(),
        ));
    }
    // Dkron: a present base64Body wins, even when empty.
    let body = match config.get("message.base64Body") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                (
                    "message.base64Body",
                    format!("message.base64Body is not base64: {e}"),
                )
            })?,
        None => get(config, "message.body").as_bytes().to_vec(),
    };
    let mode = match get(config, "message.delivery_mode") {
        "" => 0,
        text => text.parse::<u8>().map_err(|_| {
            (
                "message.delivery_mode",
                format!("message.delivery_mode must be a number from 0 to 255 (1 transient, 2 persistent), got \"{text}\""),
            )
        })?,
    };
    let content_type = match get(config, "message.content_type") {
        "" => "text/plain",
        t => t,
    };
    Ok(Message {
        body,
        content_type: content_type.to_owned(),
        delivery_mode: mode,
        message_id: get(config, "message.messageId").to_owned(),
    })
}

/// `queue.create` as Dkron reads it: declared when the key is present and not `"false"`.
fn declares_queue(config: &BTreeMap<String, String>) -> bool {
    config.get("queue.create").is_some_and(|v| v != "false")
}

pub async fn execute(
    config: &BTreeMap<String, String>,
    run: &Run,
    connections: &Connections,
) -> Outcome {
    let message = message(config).map_err(|(_, e)| format!("{e}\n"))?;
    let url = get(config, "url");
    let pool = &connections.pools().rabbitmq;
    let connect = || async {
        let properties = ConnectionProperties::default().with_connection_name("dkron".into());
        Connection::connect(url, properties).await.map(Arc::new)
    };
    let lease = pool
        .get_usable(url, connect, |c| c.status().connected())
        .await
        .map_err(|e| format!("RabbitMQ: cannot connect: {e}\n"))?;
    let conn = lease.conn.clone();
    let channel = match conn.create_channel().await {
        Ok(c) => c,
        Err(e) => {
            pool.discard(url, &conn);
            return Err(format!("RabbitMQ: cannot open a channel: {e}\n"));
        }
    };
    let outcome = publish(&channel, config, run, message).await;
    if channel.status().connected() {
        let _ = channel.close(200, "done".into()).await;
    }
    outcome
}

async fn publish(
    channel: &lapin::Channel,
    config: &BTreeMap<String, String>,
    run: &Run,
    message: Message,
) -> Outcome {
    let queue = get(config, "queue.name");
    if declares_queue(config) {
        let flag = |key| parse_bool(get(config, key)).unwrap_or(false);
        let options = QueueDeclareOptions {
            durable: flag("queue.durable"),
            auto_delete: flag("queue.auto_delete"),
            exclusive: flag("queue.exclusive"),
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .map_err(|e| format!("RabbitMQ: cannot declare queue \"{queue}\": {e}\n"))?;
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("RabbitMQ: cannot turn on publisher confirms: {e}\n"))?;

    let mut headers = FieldTable::default();
    for (name, value) in run.headers() {
        headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from(message.content_type))
        .with_headers(headers);
    // Go's client leaves a zero delivery mode out of the frame, and RabbitMQ refuses a 0.
    if message.delivery_mode != 0 {
        properties = properties.with_delivery_mode(message.delivery_mode);
    }
    if !message.message_id.is_empty() {
        properties = properties.with_message_id(ShortString::from(message.message_id));
    }
    let exchange = get(config, "exchange");
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            queue.into(),
            options,
            &message.body,
            properties,
        )
        .await
        .map_err(|e| format!("RabbitMQ: publish failed: {e}\n"))?;
    let confirmation = confirm
        .await
        .map_err(|e| format!("RabbitMQ: no publisher confirm: {e}\n"))?;
    let target = format!("exchange \"{exchange}\", routing key \"{queue}\"");
    match confirmation {
        Confirmation::Ack(None) => Ok(format!(
            "Result: message confirmed by RabbitMQ ({target})\n"
        )),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(format!(
            "RabbitMQ: the broker returned the message unrouted ({} {}): no queue is bound to {target}; set queue.create to declare the queue\n",
            returned.reply_code, returned.reply_text
        )),
        Confirmation::Nack(None) => Err(format!(
            "RabbitMQ: the broker refused the message (nack) for {target}\n"
        )),
        Confirmation::NotRequested => Err(format!(
            "RabbitMQ: the broker did not confirm the message for {target}\n"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn dkron_texts_name_the_key() {
        let problems = validate_config(&cfg(&[]));
        assert_eq!(
            problems,
            vec![
                ("url".to_owned(), "RabbitMQ url is empty".to_owned()),
                (
                    "queue.name".to_owned(),
                    "RabbitMQ queue name is empty".to_owned()
                ),
            ]
        );
        let both = cfg(&[
            ("url", "amqp://guest:guest@localhost:5672/"),
            ("queue.name", "q"),
            ("message.body", "a"),
            ("message.base64Body", "YQ=="),
        ]);
        assert_eq!(
            validate_config(&both),
            vec![(
                "message.base64Body".to_owned(),
                "RabbitMQ message.body and message.base64Body are both set".to_owned()
            )]
        );
        let bad = cfg(&[
            ("url", "http://x"),
            ("queue.name", "q"),
            ("queue.durable", "yes"),
            ("message.delivery_mode", "300"),
        ]);
        let keys: Vec<_> = validate_config(&bad).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["url", "queue.durable", "message.delivery_mode"]);
    }

    #[test]
    fn message_keys_as_dkron_reads_them() {
        let m = message(&cfg(&[("message.body", "{\"k\":1}")])).unwrap();
        assert_eq!(m.body, b"{\"k\":1}");
        assert_eq!(m.content_type, "text/plain");
        assert_eq!(m.delivery_mode, 0);
        // A present base64Body wins, even empty.
        let m = message(&cfg(&[("message.base64Body", "")])).unwrap();
        assert!(m.body.is_empty());
        let m = message(&cfg(&[
            ("message.base64Body", "aGk="),
            ("message.content_type", "application/json"),
            ("message.delivery_mode", "2"),
            ("message.messageId", "42"),
        ]))
        .unwrap();
        assert_eq!((m.body.as_slice(), m.delivery_mode), (b"hi".as_slice(), 2));
        assert_eq!(
            (m.content_type.as_str(), m.message_id.as_str()),
            ("application/json", "42")
        );
        assert!(message(&cfg(&[("message.base64Body", "%%")])).is_err());
    }

    #[test]
    fn queue_create_as_dkron_reads_it() {
        assert!(!declares_queue(&cfg(&[])));
        assert!(!declares_queue(&cfg(&[("queue.create", "false")])));
        assert!(declares_queue(&cfg(&[("queue.create", "true")])));
        assert!(declares_queue(&cfg(&[("queue.create", "")])));
    }

    #[tokio::test]
    async fn a_dead_broker_fails_the_run_and_says_why() {
        let url = format!("amqp://guest:hunter2@127.0.0.1:{}/%2f", dead_port());
        let config = cfg(&[("url", &url), ("queue.name", "q")]);
        let c = Connections::default();
        let err = crate::execute("rabbitmq", &config, &run(), &c)
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.starts_with("RabbitMQ: cannot connect: "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
