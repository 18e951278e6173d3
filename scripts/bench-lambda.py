#!/usr/bin/env python3
"""Measures the Lambda host against a local Lambda Runtime API (this script is the API):
process start → first /invocation/next poll, peak RSS, and warm invoke latency for a dropped
and for a triggering event of the shipped ECS pipeline (embedded backends, virtual time).

    cargo build --release
    python3 scripts/bench-lambda.py target/release/cutover
    python3 scripts/bench-lambda.py target/release/cutover --aws

`--aws` runs the AWS-backed pipeline (pipelines/catsndogs-aws.toml: DynamoDB dedup, Step
Functions start; clients built at init) against a moto server this script starts
(`$CUTOVER_MOTO_SERVER`, else `.venv/bin/moto_server`, else `moto_server` on PATH) and stops;
a triggering invoke then is a dedup claim, StartExecution and the claim's completion, over
loopback HTTP to moto (moto records the execution; it does not run it).
"""
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARM = 200


def fixture(name):
    with open(os.path.join(ROOT, "tests", "fixtures", name)) as f:
        return json.load(f)


class Api:
    def __init__(self, events):
        self.events = list(events)
        self.lock = threading.Condition()
        self.first_poll = None
        self.sent = {}
        self.latency = {}
        self.answers = {}
        self.n = 0


def handler_for(api):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            with api.lock:
                if api.first_poll is None:
                    api.first_poll = time.perf_counter()
                while not api.events:
                    api.lock.wait(0.1)
                kind, event = api.events.pop(0)
                api.n += 1
                rid = f"{kind}-{api.n}"
                api.sent[rid] = (kind, time.perf_counter())
            body = json.dumps(event).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:cutover")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(n)
            rid = self.path.split("/")[4]
            try:
                answer = json.loads(body)
                answer = answer.get("outcome", "?") if isinstance(answer, dict) else "?"
            except ValueError:
                answer = "?"
            with api.lock:
                kind, t0 = api.sent[rid]
                api.latency.setdefault(kind, []).append(time.perf_counter() - t0)
                # What the function answered: /response with its outcome, or /error.
                what = f"{self.path.rsplit('/', 1)[-1]}:{answer}"
                api.answers.setdefault(kind, {}).setdefault(what, 0)
                api.answers[kind][what] += 1
                api.lock.notify_all()
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    return H


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aws_call(url, service, target, body):
    """One AWS JSON 1.0 call to moto (which routes by the credential scope's service and does
    not check signatures)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target,
        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def start_moto():
    """A moto server on a free loopback port, with the dedup table and a state machine."""
    server = os.environ.get("CUTOVER_MOTO_SERVER") or next(
        (p for p in [os.path.join(ROOT, ".venv", "bin", "moto_server")] if os.path.exists(p)), None) or shutil.which("moto_server")
    if not server:
        sys.exit("--aws needs moto_server: pip install 'moto[server]' (or set CUTOVER_MOTO_SERVER)")
    port = free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.kill)  # whatever way this script ends
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit("moto_server did not start")
            time.sleep(0.1)
    try:
        return proc, url, create(url)
    except BaseException:
        proc.kill()
        raise


def create(url):
    """The dedup table and the canary state machine; the machine's ARN."""
    aws_call(url, "dynamodb", "DynamoDB_20120810.CreateTable", {
        "TableName": "cutover-dedup", "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]})
    with open(os.path.join(ROOT, "pipelines", "canary.asl.json")) as f:
        definition = f.read()
    return aws_call(url, "states", "AWSStepFunctions.CreateStateMachine", {
        "name": "canary", "definition": definition,
        "roleArn": "arn:aws:iam::123456789012:role/cutover-canary"})["stateMachineArn"]


def main():
    binary = sys.argv[1]
    aws = "--aws" in sys.argv[2:]
    dropped = fixture("task-ec2-running.json")
    running = fixture("task-fargate-running.json")
    events = [("dropped", dropped)] * WARM
    for i in range(WARM):
        e = dict(running)
        e["detail"] = dict(running["detail"], taskDefinitionArn=f"arn:aws:ecs:us-west-2:111122223333:task-definition/cats-green:{1000 + i}")
        events.append(("triggering", e))
    api = Api(events)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(api))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = tempfile.mkdtemp(prefix="cutover-bench-lambda-")
    env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}", AWS_LAMBDA_FUNCTION_NAME="cutover",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128", AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_STREAM_NAME="s",
               AWS_LAMBDA_LOG_GROUP_NAME="g", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               CUTOVER_CONFIG=os.path.join(ROOT, "pipelines", "catsndogs.toml"), CUTOVER_PIPELINE="ecs-events",
               CUTOVER_SETTINGS__DATA_DIR=data, CUTOVER_CLOCK="virtual", CUTOVER_LOG="error")
    moto = None
    if aws:
        moto, url, arn = start_moto()
        env.update(CUTOVER_CONFIG=os.path.join(ROOT, "pipelines", "catsndogs-aws.toml"), CUTOVER_CLOCK="real",
                   AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   CUTOVER_PIPELINES__ECS_EVENTS__STAGES__3__ENGINE__STATE_MACHINE_ARN=arn)
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "lambda"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with api.lock:
        while sum(len(v) for v in api.latency.values()) < len(events):
            api.lock.wait(0.5)
            if proc.poll() is not None:
                sys.exit(f"the function exited with {proc.returncode}")
    with open(f"/proc/{proc.pid}/status") as f:
        rss = next(line for line in f if line.startswith("VmHWM")).split()[1]
    proc.kill()
    if moto:
        moto.kill()
        moto.wait()
    result = {"start_to_first_poll_ms": round((api.first_poll - t0) * 1000, 2), "peak_rss_mb": round(int(rss) / 1024, 1)}
    for kind, xs in api.latency.items():
        xs = sorted(xs[10:])  # skip the first, colder ones
        result[f"{kind}_p50_ms"] = round(xs[len(xs) // 2] * 1000, 3)
        result[f"{kind}_p99_ms"] = round(xs[int(len(xs) * 0.99)] * 1000, 3)
    result["answers"] = api.answers
    print(json.dumps(result))


if __name__ == "__main__":
    main()
