"""Scale-out deployment files (issue 15), validated offline.

* ``deploy/k8s``: every manifest against the Kubernetes OpenAPI schema of a pinned version
  (``kubernetes-validate``, strict: unknown fields fail), the kustomization complete, and
  the wiring the scale-out mode depends on: GPU workers ask for one GPU, probes hit
  ``/healthz`` on the HTTP port, one ReadWriteMany spool at the same path in every role,
  the Secret's URLs reach the in-cluster broker and database with their passwords, the
  ConfigMap's ``dicomnode.yaml`` loads with the node's own config loader.
* ``docker/compose.scale.yaml``: ``docker-compose config`` (Compose Specification schema),
  then the rendered stack: 2 receivers behind one alias, GPU workers with device
  reservations, one dispatcher, RabbitMQ, PostgreSQL, Orthanc.
* ``docker/rabbitmq/rabbitmq.conf``: the same file in compose and Kubernetes,
  ``consumer_timeout`` above the longest job, and accepted by a real (private)
  ``rabbitmq-server``, which refuses to start on an unknown or mistyped key.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from dicomnode.config import load_config

from .conftest import DOCKER, ROOT

K8S = ROOT / "deploy" / "k8s"
COMPOSE = DOCKER / "compose.scale.yaml"
RABBITMQ_CONF = DOCKER / "rabbitmq" / "rabbitmq.conf"
#: The Kubernetes version the manifests are validated against (oldest supported release
#: we promise; kubernetes-validate ships schemas 1.25 … 1.37).
K8S_VERSION = "1.33.0"
NODE_ROLES = ("receiver", "worker", "dispatcher")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


# -- helpers ---------------------------------------------------------------------------
def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    return data


def _resources() -> list[dict[str, Any]]:
    return [doc for name in _kustomization()["resources"] for doc in _documents(K8S / name)]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in deploy/k8s"
    return found[0]


def _deployment(role: str) -> dict[str, Any]:
    return _one("Deployment", f"dicomnode-{role}")


def _container(role: str) -> dict[str, Any]:
    containers = _deployment(role)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, role
    container: dict[str, Any] = containers[0]
    return container


def _config_text() -> str:
    text: str = _one("ConfigMap", "dicomnode-config")["data"]["dicomnode.yaml"]
    return text


def _node_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(_config_text())
    return data


def _secret() -> dict[str, str]:
    data: dict[str, str] = _one("Secret", "dicomnode-executor")["stringData"]
    return data


def _rendered_compose() -> dict[str, Any]:
    proc = subprocess.run([_tool("docker-compose"), "-f", str(COMPOSE), "config"], cwd=DOCKER,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = yaml.safe_load(proc.stdout)
    return data


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found is not None, f"{name} not installed: `make deps` installs docker-compose"
    return found


def _role(service: dict[str, Any]) -> str | None:
    command = service.get("command") or []
    return str(command[command.index("--role") + 1]) if "--role" in command else None


def _target(port: str | dict[str, Any]) -> int:
    """Container port of a rendered ports entry (short ``[ip:]host:container/proto`` or long form)."""
    if isinstance(port, dict):
        return int(port["target"])
    return int(port.split("/")[0].split(":")[-1])


def _published(port: str | dict[str, Any]) -> int:
    if isinstance(port, dict):
        return int(port["published"])
    return int(port.split("/")[0].split(":")[-2])


def _rabbit_setting(key: str) -> str:
    match = re.search(rf"^{re.escape(key)}\s*=\s*(\S+)\s*$", RABBITMQ_CONF.read_text(), re.MULTILINE)
    assert match, f"{key} not set in {RABBITMQ_CONF}"
    return match.group(1)


# -- Kubernetes ------------------------------------------------------------------------
def test_every_manifest_validates_against_the_kubernetes_schema() -> None:
    problems = []
    for name in _kustomization()["resources"]:
        for doc in _documents(K8S / name):
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(f"{name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')} {where}: "
                                f"{exc.message}")
    assert not problems, "\n".join(problems)


def test_kustomization_lists_every_manifest_and_nothing_missing() -> None:
    listed = _kustomization()["resources"]
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    missing = [name for name in listed if not (K8S / name).is_file()]
    assert not missing, f"kustomization.yaml lists missing files: {missing}"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(listed), f"not in kustomization.yaml: {sorted(on_disk - set(listed))}"


def test_gpu_worker_takes_one_gpu_and_binds_the_pipeline_queues() -> None:
    worker = _container("worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = worker["args"]
    assert args[args.index("--role") + 1] == "worker"
    queues = set(args[args.index("--queues") + 1].split(","))
    assert queues == set(_node_config()["executor"]["queues"].values())
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["DICOMNODE_WORKER__DEVICE"] == "cuda:0"


def test_roles_replicas_and_dicom_service() -> None:
    assert _deployment("receiver")["spec"]["replicas"] == 2
    dispatcher = _deployment("dispatcher")["spec"]
    assert dispatcher["replicas"] == 1 and dispatcher["strategy"]["type"] == "Recreate"
    for role in NODE_ROLES:
        args = _container(role)["args"]
        assert args[args.index("--role") + 1] == role
        assert args[args.index("--config") + 1] == "/config/dicomnode.yaml"
    service = _one("Service", "dicomnode-dicom")
    assert service["spec"]["type"] in ("LoadBalancer", "ClusterIP")
    pod_labels = _deployment("receiver")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["protocol"] == "TCP" and port["port"] == 11112
    ports = {p["name"]: p["containerPort"] for p in _container("receiver")["ports"]}
    assert ports[port["targetPort"]] == _node_config()["node"]["port"]


def test_probes_hit_healthz_on_the_http_port() -> None:
    http_port = _node_config()["http"]["port"]
    for role in NODE_ROLES:
        container = _container(role)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe not in container:
                assert probe == "startupProbe", f"{role}: no {probe}"
                continue
            get = container[probe]["httpGet"]
            assert get["path"] == "/healthz", f"{role} {probe}"
            port = ports.get(get["port"], get["port"])
            assert port == http_port, f"{role} {probe}: port {get['port']} is not http.port {http_port}"


def test_one_readwritemany_spool_at_the_same_path_in_every_role() -> None:
    claim = _one("PersistentVolumeClaim", "dicomnode-spool")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    spool_path = _node_config()["spool"]["path"]
    for role in NODE_ROLES:
        pod = _deployment(role)["spec"]["template"]["spec"]
        volumes = [v["name"] for v in pod["volumes"]
                   if v.get("persistentVolumeClaim", {}).get("claimName") == "dicomnode-spool"]
        assert len(volumes) == 1, f"{role}: spool claim not a volume"
        mounts = [m["mountPath"] for m in _container(role)["volumeMounts"] if m["name"] == volumes[0]]
        assert mounts == [spool_path], f"{role}: spool mounted at {mounts}, config says {spool_path}"


def test_secret_urls_reach_the_in_cluster_broker_and_database() -> None:
    secret = _secret()
    broker, database = urlsplit(secret["broker-url"]), urlsplit(secret["database-url"])
    assert (broker.scheme, broker.port, broker.password) == ("amqp", 5672, secret["rabbitmq-password"])
    assert (database.scheme, database.port, database.password) == (
        "postgresql", 5432, secret["postgres-password"])
    assert _one("Service", broker.hostname or "")["spec"]["selector"]["app.kubernetes.io/name"] == "rabbitmq"
    assert _one("Service", database.hostname or "")["spec"]["selector"]["app.kubernetes.io/name"] == "postgres"
    rabbit_env = {e["name"]: e for e in _one("StatefulSet", "rabbitmq")["spec"]["template"]["spec"]
                  ["containers"][0]["env"]}
    assert rabbit_env["RABBITMQ_DEFAULT_USER"]["value"] == broker.username
    assert rabbit_env["RABBITMQ_DEFAULT_VHOST"]["value"] == broker.path.lstrip("/")
    assert rabbit_env["RABBITMQ_DEFAULT_PASS"]["valueFrom"]["secretKeyRef"]["key"] == "rabbitmq-password"
    pg_env = {e["name"]: e for e in _one("StatefulSet", "postgres")["spec"]["template"]["spec"]
              ["containers"][0]["env"]}
    assert pg_env["POSTGRES_USER"]["value"] == database.username
    assert pg_env["POSTGRES_DB"]["value"] == database.path.lstrip("/")
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    for role in NODE_ROLES:
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in _container(role)["env"] if "valueFrom" in e}
        assert refs == {"DICOMNODE_EXECUTOR__BROKER_URL": "broker-url",
                        "DICOMNODE_EXECUTOR__DATABASE_URL": "database-url"}, role


def test_config_map_loads_with_the_node_config_loader(tmp_path: Path) -> None:
    """What every pod sees: the ConfigMap's file plus the Secret's URLs as environment."""
    path = tmp_path / "dicomnode.yaml"
    path.write_text(_config_text(), encoding="utf-8")
    env = {"DICOMNODE_EXECUTOR__BROKER_URL": _secret()["broker-url"],
           "DICOMNODE_EXECUTOR__DATABASE_URL": _secret()["database-url"]}
    config: Any = load_config(path, env=env)
    assert config.executor.kind == "celery"
    assert config.executor.broker_url == env["DICOMNODE_EXECUTOR__BROKER_URL"]
    assert {route.pipeline for route in config.routes} <= set(config.executor.queues)
    assert str(config.spool.path) == "/spool"


def test_rabbitmq_config_is_the_compose_file_verbatim() -> None:
    data = _one("ConfigMap", "rabbitmq-config")["data"]["rabbitmq.conf"]
    assert data == RABBITMQ_CONF.read_text(encoding="utf-8")
    pod = _one("StatefulSet", "rabbitmq")["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m.get("subPath") == "rabbitmq.conf"]
    assert mount["mountPath"] == "/etc/rabbitmq/conf.d/20-dicomnode.conf"


def test_consumer_timeout_exceeds_the_longest_job() -> None:
    """RabbitMQ must not take a job back from a worker that is still running it."""
    timeout_ms = int(_rabbit_setting("consumer_timeout"))
    compose_cfg = yaml.safe_load((DOCKER / "config" / "compose.yaml").read_text(encoding="utf-8"))
    for name, cfg in (("deploy/k8s", _node_config()), ("docker/config/compose.yaml", compose_cfg)):
        job_timeout_s = cfg["worker"]["job_timeout_s"]
        assert timeout_ms > job_timeout_s * 1000, f"{name}: consumer_timeout {timeout_ms} ms ≤ job {job_timeout_s} s"



def test_scale_out_guide_states_the_shipped_consumer_timeout() -> None:
    """docs/scale-out.md quotes the rabbitmq.conf line operators must keep above the job timeout."""
    guide = (ROOT / "docs" / "scale-out.md").read_text(encoding="utf-8")
    assert f"consumer_timeout = {_rabbit_setting('consumer_timeout')}" in guide

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_rabbitmq(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, subprocess.Popen[bytes]]]:
    """rabbitmq-server on docker/rabbitmq/rabbitmq.conf, laid out like the image's conf.d.

    A last file moves the listener to a free loopback port (the tests' namespace may hold
    other brokers); its own data directory, Erlang cookie and epmd port. Stopped by PID.
    """
    assert (RABBIT_BIN / "rabbitmq-server").exists(), "rabbitmq-server not installed: run `make deps`"
    confd = tmp_path / "conf.d"
    confd.mkdir()
    shutil.copyfile(RABBITMQ_CONF, confd / "20-dicomnode.conf")
    (confd / "90-test.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{_free_port()}\nlog.console = false\n")
    (tmp_path / "plugins").write_text("[].\n")
    node = f"deploy{os.getpid()}@localhost"
    epmd = str(_free_port())
    env = {**os.environ, "HOME": str(tmp_path), "RABBITMQ_NODENAME": node, "RABBITMQ_CONFIG_FILES": str(confd),
           "RABBITMQ_MNESIA_BASE": str(tmp_path / "mnesia"), "RABBITMQ_LOG_BASE": str(tmp_path / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp_path / "plugins"), "ERL_EPMD_PORT": epmd,
           "RABBITMQ_DIST_PORT": str(_free_port()), "RABBITMQ_PID_FILE": str(tmp_path / "pid")}
    with (tmp_path / "server.out").open("wb") as out:
        proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=env, stdout=out, stderr=out,
                                cwd=tmp_path, start_new_session=True)  # cwd: erl_crash.dump stays there
    try:
        yield env, node, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        subprocess.run(["epmd", "-port", epmd, "-kill"], capture_output=True, timeout=30, check=False)
        print((tmp_path / "server.out").read_text(errors="replace")[-2000:])


def test_rabbitmq_server_accepts_the_config(
        private_rabbitmq: tuple[dict[str, str], str, subprocess.Popen[bytes]]) -> None:
    """A real broker starts on the file and runs with its consumer_timeout and guest rule."""
    env, node, server = private_rabbitmq

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", node, *args], env=env,
                              capture_output=True, text=True, timeout=60)

    deadline = time.monotonic() + 120  # a bound on the loop, not a performance threshold
    while ctl("await_startup", "--timeout", "5").returncode != 0:
        assert server.poll() is None, "rabbitmq-server refused the config (its output is printed above)"
        assert time.monotonic() < deadline, "rabbitmq-server did not start in 120 s"
        time.sleep(0.5)
    timeout = ctl("eval", "application:get_env(rabbit, consumer_timeout).")
    assert timeout.stdout.strip() == f"{{ok,{_rabbit_setting('consumer_timeout')}}}", timeout
    loopback = ctl("eval", "application:get_env(rabbit, loopback_users).")
    assert loopback.stdout.strip() == '{ok,[<<"guest">>]}', loopback


# -- docker compose --------------------------------------------------------------------
def test_scale_compose_passes_docker_compose_config() -> None:
    proc = subprocess.run([_tool("docker-compose"), "-f", str(COMPOSE), "config", "-q"], cwd=DOCKER,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_scale_compose_services() -> None:
    services = _rendered_compose()["services"]
    roles = {name: _role(s) for name, s in services.items()}
    receivers = [n for n, r in roles.items() if r == "receiver"]
    workers = [n for n, r in roles.items() if r == "worker"]
    assert len(receivers) == 2, roles
    assert [n for n, r in roles.items() if r == "dispatcher"] == ["dispatcher"]
    assert workers and {"rabbitmq", "postgres", "orthanc"} <= set(services)
    # Orthanc's modality "dicomnode" reaches either receiver
    orthanc_host = yaml.safe_load((DOCKER / "orthanc" / "orthanc.json").read_text())["DicomModalities"]["dicomnode"][1]
    for name in receivers:
        assert orthanc_host in services[name]["networks"]["dicom"]["aliases"], name
    published = [_published(p) for n in receivers for p in services[n]["ports"] if _target(p) == 11112]
    assert len(published) == len(set(published)) == 2, published


def test_scale_compose_workers_reserve_one_gpu_each() -> None:
    services = _rendered_compose()["services"]
    seen: list[str] = []
    for name, service in services.items():
        if _role(service) != "worker":
            continue
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"], name
        assert len(device["device_ids"]) == 1, f"{name}: one GPU per worker"
        seen += device["device_ids"]
        assert service["environment"]["DICOMNODE_WORKER__DEVICE"] == "cuda:0", name
    assert len(seen) == len(set(seen)) >= 2, f"each worker its own GPU: {seen}"


def test_scale_compose_nodes_share_spool_broker_and_database() -> None:
    services = _rendered_compose()["services"]
    rabbit, postgres = services["rabbitmq"]["environment"], services["postgres"]["environment"]
    spool_path = yaml.safe_load((DOCKER / "config" / "compose.yaml").read_text())["spool"]["path"]
    for name, service in services.items():
        if _role(service) is None:
            continue
        env = service["environment"]
        assert env["DICOMNODE_EXECUTOR__KIND"] == "celery", name
        broker = urlsplit(env["DICOMNODE_EXECUTOR__BROKER_URL"])
        assert (broker.hostname, broker.username, broker.password, broker.path.lstrip("/")) == (
            "rabbitmq", rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"],
            rabbit["RABBITMQ_DEFAULT_VHOST"]), name
        database = urlsplit(env["DICOMNODE_EXECUTOR__DATABASE_URL"])
        assert (database.hostname, database.username, database.password, database.path.lstrip("/")) == (
            "postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]), name
        assert f"spool:{spool_path}:rw" in service["volumes"], f"{name}: {service['volumes']}"
    conf = [v.split(":")[0] for v in services["rabbitmq"]["volumes"]
            if v.endswith(":/etc/rabbitmq/conf.d/20-dicomnode.conf:ro")]
    assert [Path(source) for source in conf] == [RABBITMQ_CONF]


def test_compose_node_config_loads_with_the_scale_environment(tmp_path: Path) -> None:
    """docker/config/compose.yaml plus a node service's environment: a celery config."""
    env = _rendered_compose()["services"]["dispatcher"]["environment"]
    config: Any = load_config(DOCKER / "config" / "compose.yaml", env=env)
    assert config.executor.kind == "celery"
    assert {route.pipeline for route in config.routes} <= set(config.executor.queues)
