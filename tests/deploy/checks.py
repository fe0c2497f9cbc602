"""Cross-checks between rendered Kubernetes manifests and the code they run.

Every check is a pure function over parsed YAML documents (what `kubectl
kustomize` prints) and returns a list of problems, empty when all is well, so
each can be shown to catch a broken manifest without a cluster.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

import yaml

Doc = dict[str, Any]

WORKLOAD_KINDS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})
# Addresses a port is reachable on from other pods (and the kubelet).
ANY_HOST: Final = frozenset({"0.0.0.0", "::", "[::]"})
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")
# ${NAME} or ${NAME:-default} in config files (services/providers/routes.py expands them).
ENV_REF: Final = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")
# `something_env: NAME` in config files: the variable to read it from
# (services/payments/config.py).
ENV_KEY: Final = re.compile(r"^\s*\w+_env:\s*([A-Z][A-Z0-9_]*)\s*(?:#.*)?$", re.MULTILINE)
# Seconds a Python service needs after SIGTERM beyond drain delay + grace (stop, close).
STOP_MARGIN_SECONDS: Final = 5
# A process's listeners besides AIPORT_LISTEN_ADDR and AIPORT_METRICS_ADDR, by module:
# the variable and its local default (loopback, so unset means unreachable in a pod).
EXTRA_LISTENERS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    # The payment gateways' notifications (services/payments/config.py).
    "services.payments": (("AIPORT_PAYMENTS_HTTP_ADDR", "127.0.0.1:9330"),),
}
# Variables naming where a process listens, not a peer it dials.
LISTEN_VARIABLES: Final = frozenset(
    {"AIPORT_LISTEN_ADDR", "AIPORT_METRICS_ADDR"}
    | {name for listeners in EXTRA_LISTENERS.values() for name, _ in listeners}
)
# The sandbox upstreams (test and demo equipment, dev only): module -> the variables
# of their host and port and their defaults (--host and --port win).
SANDBOX_LISTENERS: Final[dict[str, tuple[str, str, str, str]]] = {
    "sandbox": ("AIPORT_SANDBOX_HOST", "127.0.0.1", "AIPORT_SANDBOX_PORT", "9100"),
    "sandbox.payment_gateway": ("AIPORT_PAYGW_HOST", "127.0.0.1", "AIPORT_PAYGW_PORT", "9200"),
}
# Pods running the sandbox image rather than the production one.
SANDBOX_PODS: Final = frozenset({"sandbox", "pay-sandbox"})
# URLs a browser opens (links, redirects), not addresses the pod dials: in dev they
# are port-forwards on the developer's machine.
BROWSER_URLS: Final = frozenset({"AIPORT_PUBLIC_URL", "AIPORT_PAYGW_PUBLIC_URL"})
# Local defaults of the drain settings (services/common/grpc_server.py).
DEFAULT_DRAIN_DELAY_SECONDS: Final = 0.0
DEFAULT_GRACE_SECONDS: Final = 10.0


@dataclass(frozen=True)
class Pod:
    """One pod template of a workload."""

    kind: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.kind}/{self.name}"

    def containers(self) -> list[Mapping[str, Any]]:
        return [*self.spec.get("initContainers", []), *self.spec.get("containers", [])]


# --- reading documents -------------------------------------------------------------------


def parse_documents(text: str) -> list[Doc]:
    """The non-empty documents of a multi-document YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def namespace_of(doc: Mapping[str, Any]) -> str:
    return str(doc.get("metadata", {}).get("namespace", ""))


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def find(docs: Iterable[Doc], kind: str, name: str, namespace: str) -> Doc | None:
    for doc in docs:
        meta = doc.get("metadata", {})
        if doc.get("kind") == kind and meta.get("name") == name and namespace_of(doc) == namespace:
            return doc
    return None


def pods(docs: Iterable[Doc]) -> list[Pod]:
    found = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        template = doc["spec"]["template"]
        meta = template.get("metadata", {})
        found.append(
            Pod(
                kind=doc["kind"],
                name=doc["metadata"]["name"],
                namespace=namespace_of(doc),
                labels=meta.get("labels", {}),
                annotations=meta.get("annotations", {}),
                spec=template["spec"],
            )
        )
    return found


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels/matchExpressions) against a pod's labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_env(
    docs: Iterable[Doc], namespace: str, container: Mapping[str, Any]
) -> dict[str, str | None]:
    """The environment a container gets: envFrom ConfigMaps, then env (None: from a Secret
    or another source whose value the manifests do not show)."""
    env: dict[str, str | None] = {}
    docs = list(docs)
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            config_map = find(docs, "ConfigMap", ref["name"], namespace)
            for key, value in (config_map or {}).get("data", {}).items():
                env[source.get("prefix", "") + key] = str(value)
        secret = source.get("secretRef")
        if secret is not None:
            env[f"<all keys of Secret {secret['name']}>"] = None
    for var in container.get("env", []):
        env[var["name"]] = str(var["value"]) if "value" in var else None
    return env


def python_module(command: list[str]) -> str | None:
    """The X of `python -m X ...`, if that is the command."""
    if len(command) >= 3 and PurePosixPath(command[0]).name.startswith("python"):
        if command[1] == "-m":
            return command[2]
    return None


def full_command(container: Mapping[str, Any]) -> list[str]:
    return [str(part) for part in [*container.get("command", []), *container.get("args", [])]]


def addr_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def option(command: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for i, part in enumerate(command):
        if part == name and i + 1 < len(command):
            return command[i + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


# --- what a container listens on -----------------------------------------------------------


def envoy_config(docs: list[Doc], pod: Pod, container: Mapping[str, Any]) -> Any:
    """Envoy's parsed config for an envoy container: its -c file in a mounted ConfigMap."""
    path = option(full_command(container), "-c")
    if path is None:
        return None
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        base = PurePosixPath(mount["mountPath"])
        if PurePosixPath(path).parent != base:
            continue
        ref = volumes.get(mount["name"], {}).get("configMap")
        config_map = find(docs, "ConfigMap", ref["name"], pod.namespace) if ref else None
        text = (config_map or {}).get("data", {}).get(PurePosixPath(path).name)
        return yaml.safe_load(text) if text else None
    return None


def envoy_listeners(config: Any) -> list[tuple[str, int]]:
    """(host, port) of Envoy's listeners (its admin excluded)."""
    listeners = config.get("static_resources", {}).get("listeners", [])
    found = []
    for listener in listeners:
        socket = listener["address"]["socket_address"]
        found.append((str(socket["address"]), int(socket["port_value"])))
    return found


def listening(
    docs: list[Doc], pod: Pod, container: Mapping[str, Any]
) -> list[tuple[str, int]] | None:
    """(host, port) pairs the process binds, from its env and arguments, or None if
    the command is not one we know how to read."""
    command = full_command(container)
    if command and PurePosixPath(command[0]).name == "envoy":
        config = envoy_config(docs, pod, container)
        return envoy_listeners(config) if config is not None else []
    module = python_module(command)
    if module is None:
        return None
    env = container_env(docs, pod.namespace, container)
    found: list[tuple[str, int]] = []
    if module in SANDBOX_LISTENERS:
        host_env, host_default, port_env, port_default = SANDBOX_LISTENERS[module]
        host = option(command, "--host") or env.get(host_env) or host_default
        port = option(command, "--port") or env.get(port_env) or port_default
        return [(host, int(port))]
    addr = option(command, "--addr") or env.get("AIPORT_LISTEN_ADDR")
    if addr:
        found.append(addr_port(addr))
    metrics = env.get("AIPORT_METRICS_ADDR")
    if metrics:
        found.append(addr_port(metrics))
    for name, default in EXTRA_LISTENERS.get(module, ()):
        found.append(addr_port(env.get(name) or default))
    return found


def port_number(container: Mapping[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    return int(port) if str(port).isdigit() else None


def probe_ports(container: Mapping[str, Any]) -> list[tuple[str, int | str]]:
    found: list[tuple[str, int | str]] = []
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_name)
        if not probe:
            continue
        for handler in ("grpc", "httpGet", "tcpSocket"):
            if handler in probe:
                found.append((f"{probe_name}.{handler}", probe[handler]["port"]))
    return found


# --- checks --------------------------------------------------------------------------------


def check_modules(docs: list[Doc], module_exists: Callable[[str], bool]) -> list[str]:
    """Every `python -m X` a container runs names a runnable module in the repository."""
    problems = []
    for pod in pods(docs):
        for container in pod.containers():
            command = full_command(container)
            module = python_module(command)
            if module is None:
                if not command or PurePosixPath(command[0]).name != "envoy":
                    problems.append(f"{pod.where}: unknown command {command}")
            elif not module_exists(module):
                problems.append(f"{pod.where}: module {module} does not exist")
    return problems


def check_env_is_read(docs: list[Doc], read_by_code: frozenset[str]) -> list[str]:
    """Every variable a manifest gives a container is read by the code (or config it loads)."""
    problems = []
    for pod in pods(docs):
        for container in pod.containers():
            for name in container_env(docs, pod.namespace, container):
                if name not in read_by_code:
                    problems.append(f"{pod.where}/{container['name']}: {name} is read by no code")
    return problems


def named_by_config(text: str) -> set[str]:
    """Variables a config file makes its reader look up: ${NAME} references, and the
    values of `*_env:` keys (config/payments.yaml names each gateway's variables so)."""
    names = {name for name, _ in ENV_REF.findall(text)}
    names.update(ENV_KEY.findall(text))
    return names


def required_by_config(text: str) -> set[str]:
    """Variables a config file needs in a cluster: ${NAME} without a default, or whose
    default points at this machine (which in a pod is the pod itself)."""
    return {
        name
        for name, default in ENV_REF.findall(text)
        if not default or any(host in default for host in LOOPBACK_HOSTS)
    }


def check_required_env(docs: list[Doc], required: Mapping[str, frozenset[str]]) -> list[str]:
    """Each workload provides what its process needs: `required` by pod name (every
    container), plus what the providers/catalog files mounted into it reference."""
    problems = []
    for pod in pods(docs):
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for container in pod.containers():
            needed = set(required.get(pod.name, frozenset()))
            for mount in container.get("volumeMounts", []):
                ref = volumes.get(mount["name"], {}).get("configMap")
                config_map = find(docs, "ConfigMap", ref["name"], pod.namespace) if ref else None
                for text in (config_map or {}).get("data", {}).values():
                    needed |= required_by_config(str(text))
            env = container_env(docs, pod.namespace, container)
            for name in sorted(needed - set(env)):
                problems.append(f"{pod.where}/{container['name']}: {name} is not provided")
    return problems


def check_ports(docs: list[Doc]) -> list[str]:
    """containerPorts are exactly what the process listens on, on all interfaces, and
    every probe targets one of them."""
    problems = []
    for pod in pods(docs):
        for container in pod.containers():
            where = f"{pod.where}/{container['name']}"
            bound = listening(docs, pod, container)
            if bound is None:
                problems.append(f"{where}: cannot tell what {full_command(container)} listens on")
                continue
            reachable = {port for host, port in bound if host in ANY_HOST}
            declared = {int(p["containerPort"]) for p in container.get("ports", [])}
            for port in sorted(declared - reachable):
                problems.append(f"{where}: containerPort {port} is not listened on (0.0.0.0)")
            for port in sorted(reachable - declared):
                problems.append(f"{where}: listens on {port} but does not declare it")
            for probe, probed in probe_ports(container):
                number = port_number(container, probed)
                if number is None or number not in reachable:
                    problems.append(f"{where}: {probe} port {probed} is not listened on")
    return problems


def check_services(docs: list[Doc]) -> list[str]:
    """Every Service selects pods, and each targetPort is a port those pods declare."""
    problems = []
    all_pods = pods(docs)
    for service in of_kind(docs, "Service"):
        name = service["metadata"]["name"]
        selector = service["spec"].get("selector", {})
        chosen = [
            p
            for p in all_pods
            if p.namespace == namespace_of(service) and selects({"matchLabels": selector}, p.labels)
        ]
        if not selector or not chosen:
            problems.append(f"Service/{name}: selects no pods")
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in chosen:
                numbers = {port_number(c, target) for c in pod.spec["containers"]}
                declared = {
                    int(p["containerPort"])
                    for c in pod.spec["containers"]
                    for p in c.get("ports", [])
                }
                if not numbers & declared:
                    problems.append(
                        f"Service/{name}: targetPort {target} is not a port of {pod.where}"
                    )
    return problems


def check_images(docs: list[Doc], image: str, sandbox_image: str | None = None) -> list[str]:
    """Every container runs the one image the overlay sets; the sandboxes (dev only) run
    their own, and no other pod does."""
    problems = []
    for pod in pods(docs):
        wanted = sandbox_image if pod.name in SANDBOX_PODS and sandbox_image else image
        problems += [
            f"{pod.where}/{c['name']}: image {c.get('image')!r}, not {wanted!r}"
            for c in pod.containers()
            if c.get("image") != wanted
        ]
    return problems


def _selects_some_pod(selector: Mapping[str, Any], namespace: str, all_pods: list[Pod]) -> bool:
    return any(p.namespace == namespace and selects(selector, p.labels) for p in all_pods)


def check_selectors(docs: list[Doc]) -> list[str]:
    """NetworkPolicy and PDB selectors match real pods; HPAs target real Deployments."""
    problems = []
    all_pods = pods(docs)
    for policy in of_kind(docs, "NetworkPolicy"):
        name, ns = policy["metadata"]["name"], namespace_of(policy)
        selector = policy["spec"]["podSelector"]
        if selector and not _selects_some_pod(selector, ns, all_pods):
            problems.append(f"NetworkPolicy/{name}: podSelector matches no pod")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    if not _selects_some_pod(peer["podSelector"], ns, all_pods):
                        problems.append(
                            f"NetworkPolicy/{name}: a `from` podSelector matches no pod"
                        )
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        if not _selects_some_pod(pdb["spec"]["selector"], namespace_of(pdb), all_pods):
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no pod")
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if find(docs, ref["kind"], ref["name"], namespace_of(hpa)) is None:
            problems.append(
                f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: no {ref['kind']}/{ref['name']}"
            )
    return problems


def _service_port(docs: list[Doc], host: str, port: int, namespace: str) -> bool:
    service = find(docs, "Service", host, namespace)
    return service is not None and any(p["port"] == port for p in service["spec"]["ports"])


def dial_targets(value: str) -> list[tuple[str, int]]:
    """(host, port) of a gRPC target: host:port, dns:///host:port, ipv4:a:1,b:2."""
    if value.startswith("dns:///"):
        value = value.removeprefix("dns:///")
    elif value.startswith(("ipv4:", "ipv6:")):
        value = value.split(":", 1)[1]
    return [addr_port(part) for part in value.split(",")]


def check_peers(docs: list[Doc]) -> list[str]:
    """Addresses processes dial (*_ADDR env, Envoy's clusters, http:// URLs in env) name a
    Service and one of its ports."""
    problems = []
    for pod in pods(docs):
        for container in pod.containers():
            where = f"{pod.where}/{container['name']}"
            env = container_env(docs, pod.namespace, container)
            for name, value in env.items():
                if value is None or name in LISTEN_VARIABLES:
                    continue
                targets: list[tuple[str, int]] = []
                if name.endswith("_ADDR"):
                    targets = dial_targets(value)
                elif name not in BROWSER_URLS and (m := re.match(r"http://([^/:]+):(\d+)", value)):
                    targets = [(m.group(1), int(m.group(2)))]
                for host, port in targets:
                    if not _service_port(docs, host, port, pod.namespace):
                        problems.append(f"{where}: {name}={value} is not a Service port")
            config = envoy_config(docs, pod, container)
            if config is None:
                continue
            admin_port = config.get("admin", {}).get("address", {}).get("socket_address", {})
            admin_port = admin_port.get("port_value")
            for cluster in config.get("static_resources", {}).get("clusters", []):
                for group in cluster["load_assignment"].get("endpoints", []):
                    for lb in group.get("lb_endpoints", []):
                        socket = lb["endpoint"]["address"]["socket_address"]
                        host, port = str(socket["address"]), int(socket["port_value"])
                        if host == "127.0.0.1" and port == admin_port:
                            continue  # the metrics listener's way to Envoy's own admin
                        if not _service_port(docs, host, port, pod.namespace):
                            problems.append(
                                f"{where}: Envoy cluster {cluster['name']} dials {host}:{port},"
                                " not a Service port"
                            )
    return problems


POD_SECURITY: Final[dict[str, Any]] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Final[dict[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def check_hardening(docs: list[Doc]) -> list[str]:
    """Non-root, read-only, no capabilities, RuntimeDefault seccomp, requests and limits."""
    problems = []
    for pod in pods(docs):
        pod_security = pod.spec.get("securityContext", {})
        for key, value in POD_SECURITY.items():
            if pod_security.get(key) != value:
                problems.append(f"{pod.where}: securityContext.{key} is not {value!r}")
        for container in pod.containers():
            where = f"{pod.where}/{container['name']}"
            security = container.get("securityContext", {})
            for key, value in CONTAINER_SECURITY.items():
                if security.get(key) != value:
                    problems.append(f"{where}: securityContext.{key} is not {value!r}")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(bound, {}):
                        problems.append(f"{where}: no {bound}.{resource}")
    return problems


def check_long_running(docs: list[Doc]) -> list[str]:
    """Deployments have readiness and liveness probes, scrape annotations naming a
    declared port, and a termination grace that covers the process's own drain."""
    problems = []
    for pod in pods(docs):
        if pod.kind != "Deployment":
            continue
        grace_period = int(pod.spec.get("terminationGracePeriodSeconds", 30))
        declared = {
            int(p["containerPort"]) for c in pod.spec["containers"] for p in c.get("ports", [])
        }
        scrape = pod.annotations.get("prometheus.io/scrape")
        if scrape not in ("true", "false"):
            problems.append(f"{pod.where}: no prometheus.io/scrape annotation")
        if scrape == "true":
            port = pod.annotations.get("prometheus.io/port", "")
            if not port.isdigit() or int(port) not in declared:
                problems.append(f"{pod.where}: prometheus.io/port {port!r} is not a declared port")
            if not pod.annotations.get("prometheus.io/path", "").startswith("/"):
                problems.append(f"{pod.where}: no prometheus.io/path")
        for container in pod.spec["containers"]:
            where = f"{pod.where}/{container['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{where}: no {probe}")
            needed = _stop_seconds(docs, pod, container)
            if needed is not None and grace_period < needed:
                problems.append(
                    f"{where}: terminationGracePeriodSeconds {grace_period} < {needed} "
                    "(preStop + drain delay + grace + margin)"
                )
    return problems


def check_edge_drain(docs: list[Doc]) -> list[str]:
    """An Envoy preStop that drains with `inboundonly` drains only listeners marked
    traffic_direction INBOUND: without one it does nothing and keep-alive clients
    are never told to leave before Envoy exits."""
    problems = []
    for pod in pods(docs):
        for container in pod.spec["containers"]:
            pre_stop = container.get("lifecycle", {}).get("preStop", {})
            script = " ".join(str(p) for p in pre_stop.get("exec", {}).get("command", []))
            config = envoy_config(docs, pod, container)
            if config is None or "drain_listeners" not in script:
                continue
            listeners = config.get("static_resources", {}).get("listeners", [])
            inbound = [x for x in listeners if x.get("traffic_direction") == "INBOUND"]
            if "inboundonly" in script and not inbound:
                problems.append(
                    f"{pod.where}/{container['name']}: preStop drains no listener "
                    "(inboundonly, but no listener has traffic_direction: INBOUND)"
                )
    return problems


def _stop_seconds(docs: list[Doc], pod: Pod, container: Mapping[str, Any]) -> float | None:
    """Seconds the container may take to stop after the kubelet starts stopping it."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    script = " ".join(str(p) for p in pre_stop.get("exec", {}).get("command", []))
    sleeps = [float(s) for s in re.findall(r"sleep\(?\s*([0-9.]+)", script)]
    sleeps.append(float(pre_stop.get("sleep", {}).get("seconds", 0)))
    waited = sum(sleeps)
    if python_module(full_command(container)) is None:
        return waited + STOP_MARGIN_SECONDS if waited else None
    env = container_env(docs, pod.namespace, container)
    delay = float(env.get("AIPORT_DRAIN_DELAY_SECONDS") or DEFAULT_DRAIN_DELAY_SECONDS)
    grace = float(env.get("AIPORT_GRACE_SECONDS") or DEFAULT_GRACE_SECONDS)
    return waited + delay + grace + STOP_MARGIN_SECONDS


# --- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        found.append((word.upper(), rest.strip()))
    return found


def protoc_flags(text: str) -> set[str] | None:
    """The option names (no values) of the first grpc_tools.protoc call in a shell text,
    or None if there is none. -Iproto and -I"$(...)" both count as -I."""
    joined = re.sub(r"\\\n", " ", text)
    found = re.search(r"grpc_tools\.protoc(?![\w.])", joined)
    if found is None:
        return None
    call = re.split(r"&&|\n", joined[found.start() :], maxsplit=1)[0]
    call = re.sub(r"'[^']*'", "''", call)  # quoted Python one-liners are not options
    flags = re.findall(r"(?:^|\s)(--?[A-Za-z][\w-]*)", call)
    return {"-I" if flag.startswith("-I") else flag for flag in flags}


def sandbox_in_production(instructions: list[tuple[str, str]]) -> list[str]:
    """The default target (the last stage), the stages it is built FROM and the stages
    it copies from must not copy the sandbox: it is test and demo equipment, added only
    by a target of its own."""
    parents: dict[str, str] = {}
    copies: dict[str, list[str]] = {}
    sources_of: dict[str, list[str]] = {}  # stages a stage copies from (--from=)
    stage = ""
    for word, rest in instructions:
        if word == "FROM":
            parts = rest.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else rest
            parents[stage] = parts[0]
        elif word == "COPY":
            args = shlex.split(rest)
            origin = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
            if origin is not None:
                sources_of.setdefault(stage, []).append(origin)
            else:
                copies.setdefault(stage, []).extend(a for a in args[:-1] if not a.startswith("--"))
    final, seen, todo = stage, [], [stage]
    while todo:
        current = todo.pop()
        if current in seen or current not in parents:
            continue
        seen.append(current)
        todo += [parents[current], *sources_of.get(current, [])]
    return [
        f"the production image ({final}) copies {source} (stage {name})"
        for name in seen
        for source in copies.get(name, [])
        if source.rstrip("/") == "sandbox" or source.startswith("sandbox/")
    ]


def check_dockerfile(
    dockerfile: str,
    makefile: str,
    path_exists: Callable[[str], bool],
    module_exists: Callable[[str], bool],
) -> list[str]:
    """COPY sources exist, the command's module exists, and gen/ is made with the same
    protoc options as the Makefile's gen target."""
    problems = []
    instructions = dockerfile_instructions(dockerfile)
    for word, rest in instructions:
        if word == "COPY" and "--from=" not in rest:
            *sources, _ = shlex.split(rest)
            for source in sources:
                if not path_exists(source):
                    problems.append(f"COPY {source}: no such path in the repository")
        if word in ("CMD", "ENTRYPOINT"):
            command = yaml.safe_load(rest) if rest.startswith("[") else shlex.split(rest)
            module = python_module([str(p) for p in command])
            if module is not None and not module_exists(module):
                problems.append(f"{word}: module {module} does not exist")
    problems += sandbox_in_production(instructions)
    runs = "\n".join(rest for word, rest in instructions if word == "RUN")
    ours, make_gen = protoc_flags(runs), protoc_flags(makefile)
    if ours is None:
        problems.append("no RUN generates gen/ with grpc_tools.protoc")
    elif ours != make_gen:
        problems.append(
            f"protoc options differ from the Makefile's: {sorted(ours ^ (make_gen or set()))}"
        )
    return problems
