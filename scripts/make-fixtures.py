#!/usr/bin/env python3
"""Writes tests/fixtures/: realistic ECS events (shapes from the AWS documentation "Amazon ECS
events") and the deployment traces the tests, the demo and the benchmarks replay.

Deterministic: the same output on every run. Run from the repository root:
    python3 scripts/make-fixtures.py
"""
import json
import os
import random
import uuid

ACCOUNT = "111122223333"
REGION = "us-west-2"
OUT = os.path.join("tests", "fixtures")
rng = random.Random(7)


def uid():
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def hexid():
    return "%032x" % rng.getrandbits(128)


def cluster_arn(name):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}"


def ts(sec):
    m, s = divmod(sec, 60)
    h, m = divmod(m, 60)
    return f"2026-11-20T{10 + h:02d}:{m:02d}:{s:02d}Z"


def ts_ms(sec):
    return ts(sec).replace("Z", ".%03dZ" % rng.randrange(1000))


class Task:
    def __init__(self, cluster, service, family, revision, container, image, launch="FARGATE"):
        self.cluster = cluster
        self.service = service
        self.family = family
        self.revision = revision
        self.container = container
        self.image = image
        self.launch = launch
        self.id = hexid()
        self.arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{self.id}"
        self.version = 0
        self.eni = "eni-%017x" % rng.getrandbits(68)
        self.ip = "10.0.%d.%d" % (rng.randrange(1, 250), rng.randrange(2, 250))
        self.instance = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{hexid()}"
        self.created = 0
        self.deployment = "ecs-svc/%019d" % rng.getrandbits(60)

    def event(self, last, desired, at, stopped_reason=None):
        self.version += 1
        container = {
            "containerArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/{self.cluster}/{self.id}/{uid()}",
            "lastStatus": "RUNNING" if last == "RUNNING" else ("STOPPED" if last == "STOPPED" else "PENDING"),
            "name": self.container,
            "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{self.image}",
            "imageDigest": "sha256:%064x" % rng.getrandbits(256),
            "taskArn": self.arn,
            "networkInterfaces": [{"attachmentId": uid(), "privateIpv4Address": self.ip}],
            "cpu": "256",
            "memory": "512",
        }
        if last == "RUNNING":
            container["runtimeId"] = f"{self.id}-{rng.getrandbits(32)}"
        if last == "STOPPED":
            container["exitCode"] = 0
        detail = {
            "attachments": [
                {
                    "id": uid(),
                    "type": "eni",
                    "status": "ATTACHED" if last in ("RUNNING", "ACTIVATING") else "PRECREATED",
                    "details": [
                        {"name": "subnetId", "value": "subnet-0a1b2c3d4e5f60718"},
                        {"name": "networkInterfaceId", "value": self.eni},
                        {"name": "macAddress", "value": "0a:%02x:%02x:%02x:%02x:%02x" % tuple(rng.randrange(256) for _ in range(5))},
                        {"name": "privateIPv4Address", "value": self.ip},
                    ],
                }
            ]
            if self.launch == "FARGATE"
            else [],
            "attributes": [{"name": "ecs.cpu-architecture", "value": "x86_64"}],
            "availabilityZone": f"{REGION}a",
            "clusterArn": cluster_arn(self.cluster),
            "connectivity": "CONNECTED",
            "connectivityAt": ts_ms(self.created + 1),
            "containers": [container],
            "cpu": "256",
            "createdAt": ts_ms(self.created),
            "desiredStatus": desired,
            "enableExecuteCommand": False,
            "group": f"service:{self.service}" if self.service else f"family:{self.family}",
            "launchType": self.launch,
            "lastStatus": last,
            "memory": "512",
            "overrides": {"containerOverrides": [{"name": self.container}]},
            "startedBy": self.deployment if self.service else "manual-run",
            "taskArn": self.arn,
            "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{self.family}:{self.revision}",
            "updatedAt": ts_ms(at),
            "version": self.version,
        }
        if self.launch == "FARGATE":
            detail["platformVersion"] = "1.4.0"
            detail["ephemeralStorage"] = {"sizeInGiB": 20}
        else:
            detail["containerInstanceArn"] = self.instance
        if last in ("RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"):
            detail["pullStartedAt"] = ts_ms(self.created + 5)
            detail["pullStoppedAt"] = ts_ms(self.created + 12)
            detail["startedAt"] = ts_ms(self.created + 15)
        if stopped_reason:
            detail["stoppedReason"] = stopped_reason
            detail["stopCode"] = "ServiceSchedulerInitiated"
            detail["stoppingAt"] = ts_ms(at - 5)
            detail["executionStoppedAt"] = ts_ms(at - 2)
            detail["stoppedAt"] = ts_ms(at)
        return envelope("ECS Task State Change", at, [self.arn], detail)

    def lifecycle(self, start, stop_at=None):
        self.created = start
        steps = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"] if self.launch == "FARGATE" else ["PENDING", "RUNNING"]
        out = [self.event(s, "RUNNING", start + 4 * i) for i, s in enumerate(steps)]
        if stop_at is not None:
            tail = ["DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"] if self.launch == "FARGATE" else ["STOPPED"]
            for i, s in enumerate(tail):
                reason = "Scaling activity initiated by (deployment ecs-svc/1)" if s == "STOPPED" else None
                out.append(self.event(s, "STOPPED", stop_at + 3 * i, reason))
        return out


def envelope(detail_type, at, resources, detail):
    return {
        "version": "0",
        "id": uid(),
        "detail-type": detail_type,
        "source": "aws.ecs",
        "account": ACCOUNT,
        "time": ts(at),
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }


def container_instance_event(cluster, at):
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{hexid()}"
    return envelope(
        "ECS Container Instance State Change",
        at,
        [arn],
        {
            "agentConnected": True,
            "attributes": [{"name": "ecs.os-type", "value": "linux"}, {"name": "ecs.availability-zone", "value": f"{REGION}b"}],
            "clusterArn": cluster_arn(cluster),
            "containerInstanceArn": arn,
            "ec2InstanceId": "i-%017x" % rng.getrandbits(68),
            "registeredResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}],
            "remainingResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024}],
            "status": "ACTIVE",
            "version": 14801,
            "versionInfo": {"agentHash": "4023248", "agentVersion": "1.87.0", "dockerVersion": "DockerVersion: 20.10.25"},
            "updatedAt": ts_ms(at),
        },
    )


def service_event(detail_type, cluster, service, name, at):
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{service}"
    detail = {"eventType": "INFO", "eventName": name, "clusterArn": cluster_arn(cluster), "createdAt": ts_ms(at)}
    if detail_type == "ECS Deployment State Change":
        detail["deploymentId"] = "ecs-svc/%019d" % rng.getrandbits(60)
        detail["updatedAt"] = ts_ms(at)
        detail["reason"] = "ECS deployment ecs-svc/1 completed."
    return envelope(detail_type, at, [arn], detail)


def write(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_lines(name, events):
    with open(os.path.join(OUT, name), "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")


def noise(start):
    """Blue services cycling, other clusters, container instances, service events."""
    out = []
    for i in range(2):
        out += Task("catsndogsECScluster", "dogs", "dogs", 4, "dogs", "dogs:v2").lifecycle(start + 7 * i, stop_at=start + 90)
    out += Task("catsndogsECScluster", "cats", "cats", 2, "cats", "cats:v2", launch="EC2").lifecycle(start + 3, stop_at=start + 80)
    out += Task("catsndogsECScluster", "simplehomepage", "simplehomepage", 1, "simplehomepage", "simplehomepage:v1").lifecycle(start + 11)
    # the same service names on another cluster must not trigger
    out += Task("staging", "cats-green", "cats-green", 9, "cats-green", "cats:v3").lifecycle(start + 5)
    out += Task("analytics", None, "nightly-report", 12, "report", "report:v7", launch="EC2").lifecycle(start + 2, stop_at=start + 60)
    out.append(container_instance_event("catsndogsECScluster", start + 1))
    out.append(container_instance_event("analytics", start + 13))
    out.append(service_event("ECS Service Action", "catsndogsECScluster", "dogs", "SERVICE_STEADY_STATE", start + 30))
    out.append(service_event("ECS Deployment State Change", "catsndogsECScluster", "cats-green", "SERVICE_DEPLOYMENT_IN_PROGRESS", start + 2))
    return out


def green_deployment(start, revision, tasks=3):
    """`tasks` green tasks of one revision: lifecycles with a duplicate delivery and reordering."""
    out = []
    for i in range(tasks):
        t = Task("catsndogsECScluster", "cats-green", "cats-green", revision, "cats-green", f"cats:v{revision + 1}")
        life = t.lifecycle(start + 2 * i)
        out += life
        out.append(json.loads(json.dumps(life[-1])))  # EventBridge delivered RUNNING twice (same id)
    # out of order: one RUNNING arrives before its PENDING
    running_idx = [i for i, e in enumerate(out) if e["detail"]["lastStatus"] == "RUNNING"][0]
    out.insert(0, out.pop(running_idx))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    green = Task("catsndogsECScluster", "cats-green", "cats-green", 2, "cats-green", "cats:v3")
    life = green.lifecycle(0, stop_at=300)
    write("task-fargate-provisioning.json", life[0])
    write("task-fargate-running.json", life[3])
    write("task-fargate-stopped.json", life[-1])
    ec2 = Task("catsndogsECScluster", "cats", "cats", 2, "cats", "cats:v2", launch="EC2")
    ec2_life = ec2.lifecycle(0, stop_at=120)
    write("task-ec2-pending.json", ec2_life[0])
    write("task-ec2-running.json", ec2_life[1])
    write("task-ec2-stopped.json", ec2_life[-1])
    # RUNNING while ECS already wants it STOPPED: must never trigger a rollout
    stopping = Task("catsndogsECScluster", "cats-green", "cats-green", 2, "cats-green", "cats:v3")
    stopping.created = 0
    write("task-running-desired-stopped.json", stopping.event("RUNNING", "STOPPED", 30))
    write("container-instance-state-change.json", container_instance_event("catsndogsECScluster", 10))
    write("deployment-state-change.json", service_event("ECS Deployment State Change", "catsndogsECScluster", "cats-green", "SERVICE_DEPLOYMENT_COMPLETED", 20))
    write("service-action.json", service_event("ECS Service Action", "catsndogsECScluster", "cats", "SERVICE_STEADY_STATE", 30))
    unknown = envelope("ECS Something New", 40, [], {"clusterArn": cluster_arn("catsndogsECScluster"), "brandNewField": {"x": 1}})
    write("unknown-detail-type.json", unknown)

    trace = noise(0) + green_deployment(20, 2)
    late = Task("catsndogsECScluster", "cats-green", "cats-green", 2, "cats-green", "cats:v3")
    late.created = 40
    trace.append(late.event("RUNNING", "STOPPED", 60))
    head = trace[:10]
    rng.shuffle(head)  # noise arrives interleaved, not grouped by task
    trace[:10] = head
    write_lines("deployment-trace.jsonl", trace)

    two = noise(0) + green_deployment(20, 2) + noise(200) + green_deployment(220, 3, tasks=2)
    write_lines("two-revisions-trace.jsonl", two)


if __name__ == "__main__":
    main()
