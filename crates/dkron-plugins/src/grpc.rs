//! `grpc`: call one unary method described by the server's reflection service, Dkron's keys:
//! `url` (`host:port/package.Service/Method`), `body` (the request as JSON), `headers` (JSON
//! array of `"name: value"`, sent as metadata), `timeout` (whole seconds, default 30),
//! `expectCode` (the numeric gRPC status a success has, default 0 = OK). Plaintext HTTP/2, as
//! Dkron's.
//!
//! Dkron's executor always returns an empty output. Here the output is the response message
//! as JSON (protobuf's JSON mapping), or the status message when the call ended with the
//! expected non-OK code. The run's identity goes as `x-dkron-*` metadata. Server-streaming
//! and client-streaming methods are refused with a clear message (Dkron's grpcurl-based
//! executor would send one message and keep the rest).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_reflection::pb::v1 as reflection;
use tonic_reflection::pb::v1alpha as reflection_alpha;

use crate::pool::{Closable, Closing};
use crate::{Connections, Outcome, Run, get};

/// How long a method's descriptors are trusted before reflection is asked again.
const DESCRIPTOR_TTL: Duration = Duration::from_secs(60);

/// One server: its channel (HTTP/2, reconnecting) and the methods runs looked up.
pub struct Server {
    channel: Channel,
    methods: std::sync::Mutex<HashMap<String, (MethodDescriptor, Instant)>>,
}

impl Closable for Arc<Server> {
    fn close_now(self) -> Closing {
        // The channel's connection ends when its last handle is dropped.
        Box::pin(async move { drop(self) })
    }
}

/// `host:port` and `package.Service/Method` of Dkron's `url`.
fn target(url: &str) -> Result<(&str, &str, &str), String> {
    if url.is_empty() {
        return Err("url is empty".to_owned());
    }
    let (authority, path) = url
        .split_once('/')
        .ok_or("we require at least a url and a path to do a proto request")?;
    let (service, method) = path.rsplit_once('/').ok_or(
        "url must be host:port/package.Service/Method, e.g. 127.0.0.1:9000/demo.DemoService/Demo",
    )?;
    if authority.is_empty() || service.is_empty() || method.is_empty() || service.contains('/') {
        return Err(
            "url must be host:port/package.Service/Method, e.g. 127.0.0.1:9000/demo.DemoService/Demo"
                .to_owned(),
        );
    }
    Ok((authority, service, method))
}

/// Dkron's `headers`: a JSON array of `"name: value"` strings.
fn headers(config: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let text = get(config, "headers");
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = serde_json::from_str(text).map_err(|_| "Parsing headers failed")?;
    list.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("header \"{h}\" is not \"name: value\""))?;
            let name = name.trim().to_ascii_lowercase();
            MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name \"{name}\" is not valid gRPC metadata"))?;
            Ok((name, value.trim().to_owned()))
        })
        .collect()
}

fn expected_code(config: &BTreeMap<String, String>) -> Result<Code, String> {
    match get(config, "expectCode") {
        "" => Ok(Code::Ok),
        text => text
            .parse::<i32>()
            .ok()
            .filter(|n| (0..=16).contains(n))
            .map(Code::from_i32)
            .ok_or_else(|| {
                format!("expectCode must be a gRPC status code from 0 to 16, got \"{text}\"")
            }),
    }
}

pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if let Err(e) = target(get(config, "url")) {
        problems.push(("url".to_owned(), e));
    }
    let body = get(config, "body");
    if !body.is_empty() && serde_json::from_str::<serde_json::Value>(body).is_err() {
        problems.push((
            "body".to_owned(),
            "body must be the request message as JSON".to_owned(),
        ));
    }
    if let Err(e) = headers(config) {
        problems.push(("headers".to_owned(), e));
    }
    if let Err(e) = expected_code(config) {
        problems.push(("expectCode".to_owned(), e));
    }
    problems
}

/// Go's names of the status codes (`codes.Code.String()`), which Dkron's messages use.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

pub async fn execute(
    config: &BTreeMap<String, String>,
    run: &Run,
    connections: &Connections,
) -> Outcome {
    let (authority, service, method) = target(get(config, "url")).map_err(|e| format!("{e}\n"))?;
    let expected = expected_code(config).map_err(|e| format!("{e}\n"))?;
    let mut metadata = headers(config).map_err(|e| format!("{e}\n"))?;
    metadata.extend(run.headers().map(|(k, v)| (k.to_owned(), v)));

    let pool = &connections.pools().grpc;
    let connect = || async {
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("url: {e}"))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| {
            let why = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!("cannot connect to {authority}: {e} {why}")
                .trim_end()
                .to_owned()
        })?;
        Ok::<_, String>(Arc::new(Server {
            channel,
            methods: Default::default(),
        }))
    };
    let lease = pool
        .get(authority, connect)
        .await
        .map_err(|e| format!("grpc: {e}\n"))?;
    let server = lease.conn.clone();
    let outcome = call(&server, service, method, config, &metadata, expected).await;
    if let Err(e) = &outcome
        && e.starts_with("grpc: cannot reach")
    {
        pool.discard(authority, &server);
    }
    outcome
}

async fn call(
    server: &Server,
    service: &str,
    method: &str,
    config: &BTreeMap<String, String>,
    metadata: &[(String, String)],
    expected: Code,
) -> Outcome {
    let full = format!("{service}/{method}");
    let descriptor = descriptor(server, service, method, metadata).await?;
    if descriptor.is_client_streaming() || descriptor.is_server_streaming() {
        return Err(format!(
            "grpc: {full} is a streaming method; only unary methods can be called\n"
        ));
    }
    let body = match get(config, "body") {
        "" => "{}",
        b => b,
    };
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let request =
        DynamicMessage::deserialize(descriptor.input(), &mut deserializer).map_err(|e| {
            format!(
                "grpc: body is not a {} message: {e}\n",
                descriptor.input().full_name()
            )
        })?;

    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| format!("grpc: cannot reach the server: {e}\n"))?;
    let mut req = tonic::Request::new(request);
    with_metadata(&mut req, metadata);
    let path = http::uri::PathAndQuery::try_from(format!("/{full}"))
        .map_err(|e| format!("grpc: url path: {e}\n"))?;
    let codec = DynamicCodec(descriptor.output());
    let answer = grpc.unary(req, path, codec).await;
    let (code, text) = match answer {
        Ok(response) => {
            let json = serde_json::to_string_pretty(&response.into_inner())
                .unwrap_or_else(|e| format!("(the response could not be shown as JSON: {e})"));
            (Code::Ok, format!("{json}\n"))
        }
        Err(status) => (status.code(), format!("{}\n", status.message())),
    };
    if code == expected {
        Ok(text)
    } else {
        Err(format!(
            "server returned {} code, expected {}\n{text}",
            code_name(code),
            code_name(expected)
        ))
    }
}

fn with_metadata<T>(req: &mut tonic::Request<T>, metadata: &[(String, String)]) {
    for (name, value) in metadata {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(name.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            req.metadata_mut().insert(k, v);
        }
    }
}

/// The method's descriptors, from the cache or from the server's reflection service (v1,
/// then v1alpha for older servers), with every file they depend on.
async fn descriptor(
    server: &Server,
    service: &str,
    method: &str,
    metadata: &[(String, String)],
) -> Result<MethodDescriptor, String> {
    let full = format!("{service}/{method}");
    if let Some((d, read)) = server
        .methods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&full)
        && read.elapsed() < DESCRIPTOR_TTL
    {
        return Ok(d.clone());
    }
    let files = match reflect_v1(&server.channel, service, metadata).await {
        Err(status) if status.code() == Code::Unimplemented => {
            reflect_v1alpha(&server.channel, service, metadata).await
        }
        other => other,
    }
    .map_err(|s| format!("grpc: Failed querying reflection server: {}\n", s.message()))?;
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files)
        .map_err(|e| format!("grpc: the server's descriptors do not load: {e}\n"))?;
    let svc = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("grpc: the server has no service {service}\n"))?;
    let m = svc
        .methods()
        .find(|m| m.name() == method)
        .ok_or_else(|| format!("grpc: service {service} has no method {method}\n"))?;
    server
        .methods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(full, (m.clone(), Instant::now()));
    Ok(m)
}

/// Asks reflection for the file defining `symbol`, then for every file it needs that did not
/// come with it. One stream, one request at a time.
macro_rules! reflect {
    ($name:ident, $pb:ident) => {
        async fn $name(
            channel: &Channel,
            symbol: &str,
            metadata: &[(String, String)],
        ) -> Result<Vec<prost_types::FileDescriptorProto>, Status> {
            use $pb::ServerReflectionRequest;
            use $pb::server_reflection_client::ServerReflectionClient;
            use $pb::server_reflection_request::MessageRequest;
            use $pb::server_reflection_response::MessageResponse;
            let mut client = ServerReflectionClient::new(channel.clone());
            let mut files: BTreeMap<String, prost_types::FileDescriptorProto> = BTreeMap::new();
            let mut asks = vec![MessageRequest::FileContainingSymbol(symbol.to_owned())];
            while let Some(ask) = asks.pop() {
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(ask),
                };
                let mut req = tonic::Request::new(tokio_stream::once(request));
                with_metadata(&mut req, metadata);
                let mut answers = client.server_reflection_info(req).await?.into_inner();
                let Some(answer) = answers.message().await? else {
                    return Err(Status::unavailable("reflection closed the stream"));
                };
                match answer.message_response {
                    Some(MessageResponse::FileDescriptorResponse(r)) => {
                        for bytes in r.file_descriptor_proto {
                            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                                .map_err(|e| {
                                Status::internal(format!("bad descriptor: {e}"))
                            })?;
                            files.insert(file.name().to_owned(), file);
                        }
                    }
                    Some(MessageResponse::ErrorResponse(e)) => {
                        return Err(Status::new(Code::from_i32(e.error_code), e.error_message));
                    }
                    _ => return Err(Status::internal("unexpected reflection answer")),
                }
                if asks.is_empty() {
                    let needed: Vec<String> = files
                        .values()
                        .flat_map(|f| f.dependency.iter().cloned())
                        .filter(|d| !files.contains_key(d))
                        .collect();
                    asks.extend(needed.into_iter().map(MessageRequest::FileByFilename));
                    if files.len() > 1000 {
                        return Err(Status::internal("more than 1000 descriptor files"));
                    }
                }
            }
            Ok(files.into_values().collect())
        }
    };
}

reflect!(reflect_v1, reflection);
reflect!(reflect_v1alpha, reflection_alpha);

/// Encodes dynamic requests, decodes responses as `.0`'s message type.
struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicCodec;
    type Decoder = DynamicCodec;
    fn encoder(&mut self) -> Self::Encoder {
        DynamicCodec(self.0.clone())
    }
    fn decoder(&mut self) -> Self::Decoder {
        DynamicCodec(self.0.clone())
    }
}

impl Encoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

impl Decoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let mut message = DynamicMessage::new(self.0.clone());
        message
            .merge(src)
            .map_err(|e| Status::internal(format!("decoding the response: {e}")))?;
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn dkron_texts_name_the_key() {
        assert_eq!(
            validate_config(&cfg(&[])),
            vec![("url".to_owned(), "url is empty".to_owned())]
        );
        assert_eq!(
            validate_config(&cfg(&[("url", "127.0.0.1:9000")]))[0].1,
            "we require at least a url and a path to do a proto request"
        );
        let bad = cfg(&[
            ("url", "127.0.0.1:9000/test.TestService/Test"),
            ("body", "{not json"),
            ("headers", "not json"),
            ("expectCode", "99"),
        ]);
        let problems = validate_config(&bad);
        let keys: Vec<_> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["body", "headers", "expectCode"]);
        assert_eq!(problems[1].1, "Parsing headers failed");
        let ok = cfg(&[
            ("url", "127.0.0.1:9000/test.TestService/Test"),
            ("body", r#"{"body":"hi"}"#),
            ("headers", r#"["X-Team: a", "authorization: Bearer t:1"]"#),
            ("expectCode", "5"),
        ]);
        assert!(validate_config(&ok).is_empty());
        assert_eq!(
            headers(&ok).unwrap(),
            [
                ("x-team".to_owned(), "a".to_owned()),
                ("authorization".to_owned(), "Bearer t:1".to_owned())
            ]
        );
        assert_eq!(target("h:1/a.b.S/M").unwrap(), ("h:1", "a.b.S", "M"));
    }

    #[test]
    fn status_names_are_gos() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::NotFound), "NotFound");
    }

    #[tokio::test]
    async fn a_dead_server_fails_the_run_and_says_why() {
        let url = format!("127.0.0.1:{}/test.TestService/Test", dead_port());
        let c = Connections::default();
        let err = crate::execute("grpc", &cfg(&[("url", &url)]), &run(), &c)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            err.starts_with("grpc: cannot connect to 127.0.0.1:"),
            "{err}"
        );
    }
}
