"""Each manifest check passes a small good manifest set and catches one broken thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy import checks
from tests.deploy.repo import REPO, module_exists, path_exists

ENVOY_CONFIG = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}
static_resources:
  listeners:
  - address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    traffic_direction: INBOUND
  clusters:
  - name: gateway
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: gateway, port_value: 50050}}}
"""

GOOD = """
apiVersion: v1
kind: ConfigMap
metadata: {name: env-abc, namespace: ns}
data:
  AIPORT_BILLING_ADDR: dns:///billing:50051
  AIPORT_GRACE_SECONDS: "10"
  AIPORT_DRAIN_DELAY_SECONDS: "5"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: edge-config-abc, namespace: ns}
data:
  envoy.yaml: |
@ENVOY@
---
apiVersion: v1
kind: ConfigMap
metadata: {name: providers-abc, namespace: ns}
data:
  providers.yaml: |
    api_key: ${UPSTREAM_KEY}
    base_url: ${UPSTREAM_BASE_URL:-https://api.example.com}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gateway, namespace: ns}
spec:
  replicas: 2
  selector: {matchLabels: {app.kubernetes.io/name: gateway}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: gateway}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9090",
                    prometheus.io/path: /metrics}
    spec:
      terminationGracePeriodSeconds: 20
      securityContext: @POD_SECURITY@
      containers:
      - name: gateway
        image: reg/aiport:1
        command: [python, -m, services.gateway]
        envFrom: [{configMapRef: {name: env-abc}}]
        env:
        - {name: AIPORT_LISTEN_ADDR, value: "0.0.0.0:50050"}
        - {name: AIPORT_METRICS_ADDR, value: "0.0.0.0:9090"}
        - name: UPSTREAM_KEY
          valueFrom: {secretKeyRef: {name: keys, key: UPSTREAM_KEY}}
        ports:
        - {name: grpc, containerPort: 50050}
        - {name: metrics, containerPort: 9090}
        readinessProbe: {grpc: {port: 50050}}
        livenessProbe: {grpc: {port: 50050}}
        resources: @RESOURCES@
        securityContext: @CONTAINER_SECURITY@
        volumeMounts: [{name: providers, mountPath: /etc/providers}]
      volumes: [{name: providers, configMap: {name: providers-abc}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: edge, namespace: ns}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: edge}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: edge}
      annotations: {prometheus.io/scrape: "false"}
    spec:
      securityContext: @POD_SECURITY@
      containers:
      - name: edge
        image: reg/aiport:1
        command: [envoy, -c, /etc/envoy/envoy.yaml]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}}
        livenessProbe: {tcpSocket: {port: 8080}}
        lifecycle:
          preStop:
            exec:
              command: [python, -c, "drain('/drain_listeners?graceful&inboundonly'); sleep(5)"]
        resources: @RESOURCES@
        securityContext: @CONTAINER_SECURITY@
        volumeMounts: [{name: config, mountPath: /etc/envoy}]
      volumes: [{name: config, configMap: {name: edge-config-abc}}]
---
apiVersion: v1
kind: Service
metadata: {name: gateway, namespace: ns}
spec:
  clusterIP: None
  selector: {app.kubernetes.io/name: gateway}
  ports: [{name: grpc, port: 50050, targetPort: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: ns}
spec:
  selector: {app.kubernetes.io/name: gateway}
  ports: [{name: grpc, port: 50051, targetPort: 50050}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: gateway-from-edge, namespace: ns}
spec:
  podSelector: {matchLabels: {app.kubernetes.io/name: gateway}}
  ingress:
  - from: [{podSelector: {matchLabels: {app.kubernetes.io/name: edge}}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: gateway, namespace: ns}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app.kubernetes.io/name: gateway}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: gateway, namespace: ns}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: gateway}
  maxReplicas: 3
"""
FILLINGS = {
    "@ENVOY@": "\n".join("    " + line for line in ENVOY_CONFIG.strip().splitlines()),
    "@POD_SECURITY@": (
        "{runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}"
    ),
    "@CONTAINER_SECURITY@": (
        "{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true,"
        " runAsUser: 10001, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}"
    ),
    "@RESOURCES@": "{requests: {cpu: 10m, memory: 10Mi}, limits: {cpu: '1', memory: 20Mi}}",
}

READ_BY_CODE = frozenset(
    {
        "AIPORT_BILLING_ADDR",
        "AIPORT_GRACE_SECONDS",
        "AIPORT_DRAIN_DELAY_SECONDS",
        "AIPORT_LISTEN_ADDR",
        "AIPORT_METRICS_ADDR",
        "UPSTREAM_KEY",
    }
)
REQUIRED = {"gateway": frozenset({"AIPORT_LISTEN_ADDR", "AIPORT_BILLING_ADDR"})}

Docs = list[checks.Doc]
ALL_CHECKS: dict[str, Callable[[Docs], list[str]]] = {
    "modules": lambda d: checks.check_modules(d, module_exists),
    "env_is_read": lambda d: checks.check_env_is_read(d, READ_BY_CODE),
    "required_env": lambda d: checks.check_required_env(d, REQUIRED),
    "ports": checks.check_ports,
    "services": checks.check_services,
    "images": lambda d: checks.check_images(d, "reg/aiport:1"),
    "selectors": checks.check_selectors,
    "peers": checks.check_peers,
    "hardening": checks.check_hardening,
    "long_running": checks.check_long_running,
    "edge_drain": checks.check_edge_drain,
}


def good() -> Docs:
    text = GOOD
    for marker, filling in FILLINGS.items():
        text = text.replace(marker, filling)
    return checks.parse_documents(text)


def named(docs: Docs, kind: str, name: str) -> Any:
    found = checks.find(docs, kind, name, "ns")
    assert found is not None
    return found


def gateway_container(docs: Docs) -> Any:
    return named(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]


def set_env(docs: Docs, name: str, value: str) -> None:
    for var in gateway_container(docs)["env"]:
        if var["name"] == name:
            var["value"] = value


@pytest.mark.parametrize("check", ALL_CHECKS)
def test_the_good_manifests_pass(check: str) -> None:
    assert ALL_CHECKS[check](good()) == []


def break_module(d: Docs) -> None:
    gateway_container(d)["command"] = ["python", "-m", "services.no_such_service"]


def break_unknown_command(d: Docs) -> None:
    gateway_container(d)["command"] = ["bash", "-c", "sleep 1"]


def break_unread_env(d: Docs) -> None:
    gateway_container(d)["env"].append({"name": "AIPORT_TYPO", "value": "1"})


def break_unread_configmap_env(d: Docs) -> None:
    named(d, "ConfigMap", "env-abc")["data"]["AIPORT_NOBODY_READS"] = "x"


def break_required_env(d: Docs) -> None:
    del named(d, "ConfigMap", "env-abc")["data"]["AIPORT_BILLING_ADDR"]


def break_upstream_key(d: Docs) -> None:
    gateway_container(d)["env"] = [
        v for v in gateway_container(d)["env"] if v["name"] != "UPSTREAM_KEY"
    ]


def break_listen_port(d: Docs) -> None:
    set_env(d, "AIPORT_LISTEN_ADDR", "0.0.0.0:50059")


def break_loopback_listen(d: Docs) -> None:
    set_env(d, "AIPORT_LISTEN_ADDR", "127.0.0.1:50050")


def break_probe_port(d: Docs) -> None:
    gateway_container(d)["readinessProbe"] = {"grpc": {"port": 50051}}


def break_envoy_listener(d: Docs) -> None:
    config = named(d, "ConfigMap", "edge-config-abc")["data"]
    config["envoy.yaml"] = config["envoy.yaml"].replace("8080", "8081")


def break_service_target(d: Docs) -> None:
    named(d, "Service", "gateway")["spec"]["ports"][0]["targetPort"] = "grpc-typo"


def break_service_selector(d: Docs) -> None:
    named(d, "Service", "gateway")["spec"]["selector"] = {"app.kubernetes.io/name": "gatewy"}


def break_image(d: Docs) -> None:
    gateway_container(d)["image"] = "aiport:latest"


def break_policy_selector(d: Docs) -> None:
    named(d, "NetworkPolicy", "gateway-from-edge")["spec"]["podSelector"]["matchLabels"] = {
        "app.kubernetes.io/name": "gateway-typo"
    }


def break_policy_peer(d: Docs) -> None:
    rule = named(d, "NetworkPolicy", "gateway-from-edge")["spec"]["ingress"][0]
    rule["from"][0]["podSelector"]["matchLabels"] = {"app": "edge"}


def break_pdb(d: Docs) -> None:
    named(d, "PodDisruptionBudget", "gateway")["spec"]["selector"]["matchLabels"] = {"x": "y"}


def break_hpa(d: Docs) -> None:
    named(d, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"]["name"] = "gw"


def break_peer_port(d: Docs) -> None:
    named(d, "ConfigMap", "env-abc")["data"]["AIPORT_BILLING_ADDR"] = "dns:///billing:5051"


def break_envoy_cluster(d: Docs) -> None:
    config = named(d, "ConfigMap", "edge-config-abc")["data"]
    config["envoy.yaml"] = config["envoy.yaml"].replace("address: gateway", "address: gw")


def break_root(d: Docs) -> None:
    gateway_container(d)["securityContext"]["runAsNonRoot"] = False


def break_writable_root(d: Docs) -> None:
    del gateway_container(d)["securityContext"]["readOnlyRootFilesystem"]


def break_limits(d: Docs) -> None:
    del gateway_container(d)["resources"]["limits"]["memory"]


def break_liveness(d: Docs) -> None:
    del gateway_container(d)["livenessProbe"]


def break_scrape_port(d: Docs) -> None:
    annotations = named(d, "Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    annotations["prometheus.io/port"] = "9091"


def break_grace_period(d: Docs) -> None:
    named(d, "ConfigMap", "env-abc")["data"]["AIPORT_GRACE_SECONDS"] = "30"


def break_edge_drain(d: Docs) -> None:
    config = named(d, "ConfigMap", "edge-config-abc")["data"]
    config["envoy.yaml"] = config["envoy.yaml"].replace("traffic_direction: INBOUND", "")


@pytest.mark.parametrize(
    ("breakage", "check", "expected"),
    [
        (break_module, "modules", "services.no_such_service does not exist"),
        (break_unknown_command, "modules", "unknown command"),
        (break_unread_env, "env_is_read", "AIPORT_TYPO is read by no code"),
        (break_unread_configmap_env, "env_is_read", "AIPORT_NOBODY_READS"),
        (break_required_env, "required_env", "AIPORT_BILLING_ADDR is not provided"),
        (break_upstream_key, "required_env", "UPSTREAM_KEY is not provided"),
        (break_listen_port, "ports", "containerPort 50050 is not listened on"),
        (break_loopback_listen, "ports", "containerPort 50050 is not listened on"),
        (break_probe_port, "ports", "readinessProbe.grpc port 50051"),
        (break_envoy_listener, "ports", "containerPort 8080 is not listened on"),
        (break_service_target, "services", "targetPort grpc-typo"),
        (break_service_selector, "services", "Service/gateway: selects no pods"),
        (break_image, "images", "image 'aiport:latest'"),
        (break_policy_selector, "selectors", "podSelector matches no pod"),
        (break_policy_peer, "selectors", "`from` podSelector matches no pod"),
        (break_pdb, "selectors", "PodDisruptionBudget/gateway: selects no pod"),
        (break_hpa, "selectors", "no Deployment/gw"),
        (break_peer_port, "peers", "AIPORT_BILLING_ADDR=dns:///billing:5051"),
        (break_envoy_cluster, "peers", "dials gw:50050"),
        (break_root, "hardening", "runAsNonRoot"),
        (break_writable_root, "hardening", "readOnlyRootFilesystem"),
        (break_limits, "hardening", "no limits.memory"),
        (break_liveness, "long_running", "no livenessProbe"),
        (break_scrape_port, "long_running", "prometheus.io/port '9091'"),
        (break_grace_period, "long_running", "terminationGracePeriodSeconds 20 < 40"),
        (break_edge_drain, "edge_drain", "drains no listener"),
    ],
    ids=lambda value: getattr(value, "__name__", None) if callable(value) else None,
)
def test_a_broken_manifest_is_caught(
    breakage: Callable[[Docs], None], check: str, expected: str
) -> None:
    docs = good()
    breakage(docs)
    problems = ALL_CHECKS[check](docs)
    assert any(expected in p for p in problems), problems


def test_required_by_config_treats_loopback_defaults_as_missing() -> None:
    text = "a: ${KEY}\nb: ${URL:-http://127.0.0.1:9100/v1}\nc: ${BASE:-https://api.x.ai/v1}"
    assert checks.required_by_config(text) == {"KEY", "URL"}


def test_named_by_config_reads_references_and_env_keys() -> None:
    text = (
        "a: ${KEY}\nb: ${URL:-http://x}\ngateways:\n  m:\n    server_key_env: M_KEY\n"
        "    api_url_env: M_URL  # the API host\n    note: not_env_NAME\n"
    )
    assert checks.named_by_config(text) == {"KEY", "URL", "M_KEY", "M_URL"}


# payments (a second listener, for webhooks) and the payment sandbox (dev), with the
# edge their notifications go through.
PAYMENTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: payments, namespace: ns}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: payments}}
  template:
    metadata: {labels: {app.kubernetes.io/name: payments}}
    spec:
      containers:
      - name: payments
        image: reg/aiport:1
        command: [python, -m, services.payments]
        env:
        - {name: AIPORT_LISTEN_ADDR, value: "0.0.0.0:50057"}
        - {name: AIPORT_PAYMENTS_HTTP_ADDR, value: "0.0.0.0:9330"}
        - {name: AIPORT_MIDTRANS_API_URL, value: "http://pay-sandbox:9110"}
        ports: [{name: grpc, containerPort: 50057}, {name: http, containerPort: 9330}]
        readinessProbe: {grpc: {port: 50057}}
        livenessProbe: {httpGet: {path: /healthz, port: 9330}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: pay-sandbox, namespace: ns}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: pay-sandbox}}
  template:
    metadata: {labels: {app.kubernetes.io/name: pay-sandbox}}
    spec:
      containers:
      - name: pay-sandbox
        image: reg/sandbox:1
        command: [python, -m, sandbox.payment_gateway, serve, --host, 0.0.0.0, --port, "9110"]
        env:
        - {name: AIPORT_MIDTRANS_NOTIFICATION_URL, value: "http://edge:8080/webhooks/midtrans"}
        - {name: AIPORT_PAYGW_PUBLIC_URL, value: "http://127.0.0.1:9110"}
        ports: [{name: http, containerPort: 9110}]
        readinessProbe: {httpGet: {path: /_sandbox/healthz, port: http}}
---
apiVersion: v1
kind: Service
metadata: {name: pay-sandbox, namespace: ns}
spec:
  selector: {app.kubernetes.io/name: pay-sandbox}
  ports: [{name: http, port: 9110, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: edge, namespace: ns}
spec:
  selector: {app.kubernetes.io/name: payments}
  ports: [{name: http, port: 8080, targetPort: http}]
"""


def payments_docs() -> Docs:
    return checks.parse_documents(PAYMENTS)


def container_of(docs: Docs, name: str) -> Any:
    return named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def test_payments_and_the_payment_sandbox_pass() -> None:
    docs = payments_docs()
    assert checks.check_ports(docs) == []
    # Listen addresses and the browser's URL are not peers; the rest name Services.
    assert checks.check_peers(docs) == []
    assert checks.check_images(docs, "reg/aiport:1", "reg/sandbox:1") == []


def test_a_webhook_listener_left_on_loopback_is_caught() -> None:
    docs = payments_docs()
    env = container_of(docs, "payments")["env"]
    container_of(docs, "payments")["env"] = [
        v for v in env if v["name"] != "AIPORT_PAYMENTS_HTTP_ADDR"
    ]
    problems = checks.check_ports(docs)
    assert "Deployment/payments/payments: containerPort 9330 is not listened on (0.0.0.0)" in (
        problems
    )
    assert any("livenessProbe.httpGet port 9330" in p for p in problems), problems


def test_the_payment_sandbox_listens_where_its_options_or_env_say() -> None:
    docs = payments_docs()
    sandbox = container_of(docs, "pay-sandbox")
    sandbox["command"] = sandbox["command"][:4]  # no --host, --port
    problems = checks.check_ports(docs)
    assert any("containerPort 9110 is not listened on" in p for p in problems), problems
    sandbox["env"] += [
        {"name": "AIPORT_PAYGW_HOST", "value": "0.0.0.0"},
        {"name": "AIPORT_PAYGW_PORT", "value": "9110"},
    ]
    assert checks.check_ports(docs) == []


def test_a_notification_url_naming_no_service_is_caught() -> None:
    docs = payments_docs()
    for var in container_of(docs, "pay-sandbox")["env"]:
        if var["name"] == "AIPORT_MIDTRANS_NOTIFICATION_URL":
            var["value"] = "http://edge:8081/webhooks/midtrans"
    problems = checks.check_peers(docs)
    assert problems == [
        "Deployment/pay-sandbox/pay-sandbox: AIPORT_MIDTRANS_NOTIFICATION_URL="
        "http://edge:8081/webhooks/midtrans is not a Service port"
    ]


def test_the_payment_sandbox_must_run_the_sandbox_image() -> None:
    docs = payments_docs()
    container_of(docs, "pay-sandbox")["image"] = "reg/aiport:1"
    problems = checks.check_images(docs, "reg/aiport:1", "reg/sandbox:1")
    assert problems == [
        "Deployment/pay-sandbox/pay-sandbox: image 'reg/aiport:1', not 'reg/sandbox:1'"
    ]


def test_dial_targets_reads_every_grpc_target_form() -> None:
    assert checks.dial_targets("dns:///billing:50051") == [("billing", 50051)]
    assert checks.dial_targets("billing:50051") == [("billing", 50051)]
    assert checks.dial_targets("ipv4:127.0.0.1:1,127.0.0.1:2") == [
        ("127.0.0.1", 1),
        ("127.0.0.1", 2),
    ]


DOCKERFILE = """\
FROM python:3.11-slim AS build
COPY pyproject.toml ./
COPY services ./services
RUN pip install . \\
 && python -m grpc_tools.protoc -Iproto -I"$(python -c 'print(1)')" \\
      --python_out=g --pyi_out=g --grpc_python_out=g \\
      --include_imports --include_source_info --descriptor_set_out=g/a.pb x.proto \\
 && touch g/__init__.py
FROM python:3.11-slim
COPY --from=build /opt /opt
CMD ["python", "-m", "services.gateway"]
"""


def dockerfile_problems(dockerfile: str) -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    return checks.check_dockerfile(dockerfile, makefile, path_exists, module_exists)


def test_the_dockerfile_check_passes_a_good_dockerfile() -> None:
    assert dockerfile_problems(DOCKERFILE) == []
    # The sandbox in a target of its own, not built FROM by the default one: fine.
    with_sandbox = (
        DOCKERFILE.replace("FROM python:3.11-slim\n", "FROM python:3.11-slim AS runtime\n")
        + "FROM runtime AS sandbox\nCOPY sandbox /app/sandbox\nFROM runtime AS production\n"
    )
    assert dockerfile_problems(with_sandbox) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("COPY services", "COPY servicez", "COPY servicez: no such path"),
        ('"services.gateway"', '"services.gateway2"', "module services.gateway2 does not exist"),
        ("--include_source_info ", "", "protoc options differ"),
        ("grpc_tools.protoc", "grpc_tools.protocol", "no RUN generates gen/"),
        ("COPY services ./services", "COPY sandbox ./sandbox", "copies sandbox (stage build)"),
        (
            "COPY --from=build /opt /opt",
            "COPY --from=build /opt /opt\nCOPY sandbox /app/sandbox",
            "copies sandbox",
        ),
    ],
)
def test_the_dockerfile_check_catches(old: str, new: str, expected: str) -> None:
    assert old in DOCKERFILE
    problems = dockerfile_problems(DOCKERFILE.replace(old, new))
    assert any(expected in p for p in problems), problems


def test_the_operator_examples_parse_as_their_custom_resources() -> None:
    examples = REPO / "deploy/k8s/examples"
    kinds = {
        (doc["apiVersion"], doc["kind"])
        for path in examples.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    }
    assert kinds == {
        ("postgresql.cnpg.io/v1", "Cluster"),
        ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
        ("redis.redis.opstreelabs.in/v1beta2", "Redis"),
    }
