"""The rendered Kubernetes manifests: schema-valid, and consistent with the code.

Each overlay is rendered with `kubectl kustomize` (a missing kubectl fails, it
does not skip) and every document is validated offline by kubernetes-validate
against the Kubernetes version's strict schemas.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from deploy.k8s import render_envoy, sync_config
from deploy.local import envoy as local_envoy
from tests.deploy import checks
from tests.deploy.repo import (
    K8S,
    KUBECTL_MISSING,
    KUBERNETES_VERSION,
    OVERLAYS,
    REPO,
    env_read_by_code,
    kubectl,
    module_exists,
    overlay_image,
    path_exists,
    render,
)

BACKING: Final = "aiport-backing"
UPSTREAM_KEYS: Final = "aiport-upstream-keys"
SERVICE_TOKENS: Final = "aiport-service-tokens"
PAYMENT_GATEWAYS: Final = "aiport-payment-gateways"
# What payments presents to the payment gateways (and, in dev, the payment sandbox
# holds to check it and to sign its callbacks).
PAYMENT_GATEWAY_KEYS: Final = frozenset(
    {"AIPORT_MIDTRANS_SERVER_KEY", "AIPORT_XENDIT_SECRET_KEY", "AIPORT_XENDIT_CALLBACK_TOKEN"}
)
# Where payments reaches each gateway (config/payments.yaml names them).
PAYMENT_GATEWAY_URLS: Final = (
    "AIPORT_MIDTRANS_SNAP_URL",
    "AIPORT_MIDTRANS_API_URL",
    "AIPORT_XENDIT_API_URL",
)
LISTEN = frozenset({"AIPORT_LISTEN_ADDR", "AIPORT_METRICS_ADDR"})
# What each process reads and has no usable default for in a cluster (their own
# listen address included: the local default is 127.0.0.1). Upstream keys come on
# top, from the providers file mounted into the pod (checks.required_by_config).
REQUIRED_ENV: Final[dict[str, frozenset[str]]] = {
    "gateway": LISTEN
    | {
        "AIPORT_BILLING_ADDR",
        "AIPORT_PROVIDERS_ADDR",
        "AIPORT_JOBS_ADDR",
        "AIPORT_CATALOG",
        "AIPORT_BLOB_DIR",
        "AIPORT_PUBLIC_URL",
        "AIPORT_SERVICE_TOKEN",
        "AIPORT_JOBS_TOKEN",
        "AIPORT_ACCOUNTS_ADDR",
        "AIPORT_ACCOUNTS_TOKEN",
        "AIPORT_PAYMENTS_ADDR",
        "AIPORT_PAYMENTS_TOKEN",
        "AIPORT_REDIS_URL",
    },
    "billing": LISTEN
    | {
        "AIPORT_DATABASE_URL",
        "AIPORT_SERVICE_TOKEN_GATEWAY",
        "AIPORT_SERVICE_TOKEN_JOBS",
        "AIPORT_SERVICE_TOKEN_ADMIN",
        "AIPORT_SERVICE_TOKEN_ACCOUNTS",
        "AIPORT_SERVICE_TOKEN_PAYMENTS",
    },
    "accounts": LISTEN
    | {
        "AIPORT_DATABASE_URL",
        "AIPORT_REDIS_URL",
        "AIPORT_BILLING_ADDR",
        "AIPORT_PUBLIC_URL",
        "AIPORT_SMTP_HOST",
        "AIPORT_SMTP_FROM",
        "AIPORT_SERVICE_TOKEN",
        "AIPORT_ACCOUNTS_TOKEN_CONSOLE",
        "AIPORT_ACCOUNTS_TOKEN_ADMIN",
        "AIPORT_ACCOUNTS_TOKEN_GATEWAY",
    },
    # Gateway URLs are needed only with the gateway's keys, which are optional; the
    # tests below check both come together.
    "payments": LISTEN
    | {
        "AIPORT_PAYMENTS_HTTP_ADDR",
        "AIPORT_DATABASE_URL",
        "AIPORT_BILLING_ADDR",
        "AIPORT_PAYMENTS_CONFIG",
        "AIPORT_PUBLIC_URL",
        "AIPORT_SERVICE_TOKEN",
        "AIPORT_PAYMENTS_TOKEN_GATEWAY",
        "AIPORT_PAYMENTS_TOKEN_ADMIN",
    },
    # Dev only: without these it notifies nobody and links to its own loopback.
    "pay-sandbox": frozenset(
        {
            "AIPORT_MIDTRANS_NOTIFICATION_URL",
            "AIPORT_XENDIT_CALLBACK_URL",
            "AIPORT_PAYGW_PUBLIC_URL",
        }
    ),
    "providers": LISTEN | {"AIPORT_PROVIDERS"},
    "jobs": LISTEN
    | {
        "AIPORT_DATABASE_URL",
        "AIPORT_AMQP_URL",
        "AIPORT_BILLING_ADDR",
        "AIPORT_SERVICE_TOKEN",
        "AIPORT_JOBS_TOKEN_GATEWAY",
        "AIPORT_JOBS_TOKEN_WORKER",
    },
    "worker-image": LISTEN
    | {"AIPORT_AMQP_URL", "AIPORT_JOBS_ADDR", "AIPORT_PROVIDERS", "AIPORT_BLOB_DIR"},
    "worker-video": LISTEN
    | {"AIPORT_AMQP_URL", "AIPORT_JOBS_ADDR", "AIPORT_PROVIDERS", "AIPORT_BLOB_DIR"},
    "files": LISTEN | {"AIPORT_BLOB_DIR"},
    "console": LISTEN
    | {"AIPORT_GATEWAY_ADDR", "AIPORT_PUBLIC_URL", "AIPORT_ACCOUNTS_ADDR", "AIPORT_ACCOUNTS_TOKEN"},
    "aiport-migrate": frozenset({"AIPORT_DATABASE_URL"}),
}
SERVICES: Final = (
    "edge",
    "gateway",
    "billing",
    "providers",
    "jobs",
    "accounts",
    "payments",
    "worker-image",
    "worker-video",
    "files",
    "console",
)
GRPC_BACKENDS: Final = ("gateway", "billing", "providers", "jobs", "accounts", "payments")
# Test and demo equipment: the dev overlay only.
SANDBOXES: Final = ("sandbox", "pay-sandbox")


def rendered(overlay: str) -> list[checks.Doc]:
    try:
        return list(render(overlay))
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def test_kubectl_is_installed() -> None:
    assert kubectl() is not None, KUBECTL_MISSING


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_is_schema_valid(overlay: str) -> None:
    docs = rendered(overlay)
    assert len(docs) > 30
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_objects(overlay: str) -> None:
    docs = rendered(overlay)
    for name in SERVICES:
        for kind in ("Deployment", "Service", "PodDisruptionBudget"):
            assert checks.find(docs, kind, name, docs[0]["metadata"]["namespace"]), (kind, name)
    services = {d["metadata"]["name"]: d for d in checks.of_kind(docs, "Service")}
    for name in GRPC_BACKENDS:
        assert services[name]["spec"]["clusterIP"] == "None", f"{name} must be headless"
    assert services["edge"]["spec"].get("type") == "ClusterIP"
    assert checks.of_kind(docs, "Job")[0]["metadata"]["name"] == "aiport-migrate"
    assert checks.of_kind(docs, "Secret") == [], "secrets are created by the operator, never here"


def test_production_autoscales_with_two_replicas_at_least() -> None:
    docs = rendered("production")
    hpas = {
        d["spec"]["scaleTargetRef"]["name"]: d
        for d in checks.of_kind(docs, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == set(SERVICES)
    assert all(h["spec"]["minReplicas"] >= 2 for h in hpas.values())
    deployments = checks.of_kind(docs, "Deployment")
    assert all(d["spec"]["replicas"] >= 2 for d in deployments)
    for sandbox in SANDBOXES:
        assert checks.find(docs, "Deployment", sandbox, "aiport") is None, sandbox


def test_dev_runs_the_sandbox_on_one_replica_each() -> None:
    docs = rendered("dev")
    assert checks.of_kind(docs, "HorizontalPodAutoscaler") == []
    assert all(d["spec"]["replicas"] == 1 for d in checks.of_kind(docs, "Deployment"))
    for sandbox in SANDBOXES:
        assert checks.find(docs, "Deployment", sandbox, "aiport-dev"), sandbox
    providers = next(
        d
        for d in checks.of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("aiport-providers")
    )
    assert (
        providers["data"]["providers.yaml"] == (REPO / "config/providers.sandbox.yaml").read_text()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_name_existing_modules(overlay: str) -> None:
    assert checks.check_modules(rendered(overlay), module_exists) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_var_set_is_read_by_the_code(overlay: str) -> None:
    assert checks.check_env_is_read(rendered(overlay), env_read_by_code()) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_var_the_code_needs_is_provided(overlay: str) -> None:
    assert checks.check_required_env(rendered(overlay), REQUIRED_ENV) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_tokens_go_only_to_billing_and_each_caller_its_own(overlay: str) -> None:
    given: dict[str, set[str]] = {}
    for pod in checks.pods(rendered(overlay)):
        for container in pod.containers():
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == SERVICE_TOKENS:
                    given.setdefault(pod.name, set()).add(f"{var['name']}={ref['key']}")
    assert given == {
        "billing": {
            "AIPORT_SERVICE_TOKEN_GATEWAY=gateway",
            "AIPORT_SERVICE_TOKEN_JOBS=jobs",
            "AIPORT_SERVICE_TOKEN_ADMIN=admin",
            "AIPORT_SERVICE_TOKEN_ACCOUNTS=accounts",
            "AIPORT_SERVICE_TOKEN_PAYMENTS=payments",
        },
        "accounts": {
            "AIPORT_SERVICE_TOKEN=accounts",
            "AIPORT_ACCOUNTS_TOKEN_CONSOLE=console-to-accounts",
            "AIPORT_ACCOUNTS_TOKEN_ADMIN=admin-to-accounts",
            "AIPORT_ACCOUNTS_TOKEN_GATEWAY=gateway-to-accounts",
        },
        "payments": {
            "AIPORT_SERVICE_TOKEN=payments",
            "AIPORT_PAYMENTS_TOKEN_GATEWAY=gateway-to-payments",
            "AIPORT_PAYMENTS_TOKEN_ADMIN=admin-to-payments",
        },
        "gateway": {
            "AIPORT_SERVICE_TOKEN=gateway",
            "AIPORT_JOBS_TOKEN=gateway-to-jobs",
            "AIPORT_ACCOUNTS_TOKEN=gateway-to-accounts",
            "AIPORT_PAYMENTS_TOKEN=gateway-to-payments",
        },
        "console": {"AIPORT_ACCOUNTS_TOKEN=console-to-accounts"},
        "jobs": {
            "AIPORT_SERVICE_TOKEN=jobs",
            "AIPORT_JOBS_TOKEN_GATEWAY=gateway-to-jobs",
            "AIPORT_JOBS_TOKEN_WORKER=worker-to-jobs",
        },
        "worker-image": {"AIPORT_JOBS_TOKEN=worker-to-jobs"},
        "worker-video": {"AIPORT_JOBS_TOKEN=worker-to-jobs"},
    }


def test_production_gives_upstream_keys_to_providers_and_workers_only() -> None:
    docs = rendered("production")
    keyed = {
        pod.name
        for pod in checks.pods(docs)
        for c in pod.containers()
        for var in c.get("env", [])
        if var.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == UPSTREAM_KEYS
    }
    assert keyed == {"providers", "worker-image", "worker-video"}


def payment_gateway_keys(overlay: str) -> dict[str, set[str]]:
    """Pod -> the aiport-payment-gateways keys it is given (each as the variable of
    the same name, and optional: a gateway without keys is off)."""
    keyed: dict[str, set[str]] = {}
    for pod in checks.pods(rendered(overlay)):
        for c in pod.containers():
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == PAYMENT_GATEWAYS:
                    assert ref["key"] == var["name"] and ref.get("optional") is True, var
                    keyed.setdefault(pod.name, set()).add(ref["key"])
    return keyed


def test_production_gives_payment_gateway_keys_to_payments_only() -> None:
    assert payment_gateway_keys("production") == {"payments": set(PAYMENT_GATEWAY_KEYS)}


def test_dev_gives_payments_and_the_payment_sandbox_the_same_keys() -> None:
    assert payment_gateway_keys("dev") == {
        "payments": set(PAYMENT_GATEWAY_KEYS),
        "pay-sandbox": set(PAYMENT_GATEWAY_KEYS),
    }


def pod_env(docs: list[checks.Doc], name: str) -> dict[str, str | None]:
    pod = next(p for p in checks.pods(docs) if p.name == name)
    return checks.container_env(docs, pod.namespace, pod.spec["containers"][0])


def test_production_pays_at_the_gateways_and_is_notified_at_the_public_url() -> None:
    env = pod_env(rendered("production"), "payments")
    assert all((env[name] or "").startswith("https://") for name in PAYMENT_GATEWAY_URLS)
    # The gateways notify the public URL's /webhooks/ (the edge): the default.
    assert "AIPORT_PAYMENTS_NOTIFICATION_URL" not in env
    assert (env["AIPORT_PUBLIC_URL"] or "").startswith("https://")


def test_dev_pays_at_the_payment_sandbox_which_notifies_the_edge() -> None:
    docs = rendered("dev")
    payments, sandbox = pod_env(docs, "payments"), pod_env(docs, "pay-sandbox")
    assert {payments[name] for name in PAYMENT_GATEWAY_URLS} == {"http://pay-sandbox:9110"}
    # Midtrans is told per order where to notify; Xendit's callback URL is the
    # sandbox's own setting. Both go through the edge inside the cluster, as the
    # real gateways' notifications come in through it.
    assert payments["AIPORT_PAYMENTS_NOTIFICATION_URL"] == "http://edge:8080"
    assert sandbox["AIPORT_MIDTRANS_NOTIFICATION_URL"] == "http://edge:8080/webhooks/midtrans"
    assert sandbox["AIPORT_XENDIT_CALLBACK_URL"] == "http://edge:8080/webhooks/xendit"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_match_what_processes_listen_on(overlay: str) -> None:
    docs = rendered(overlay)
    assert checks.check_ports(docs) == []
    assert checks.check_services(docs) == []
    assert checks.check_peers(docs) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_the_overlay_image(overlay: str) -> None:
    sandbox = overlay_image(overlay, "aiport-sandbox") if overlay == "dev" else None
    assert checks.check_images(rendered(overlay), overlay_image(overlay), sandbox) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_targets_exist(overlay: str) -> None:
    assert checks.check_selectors(rendered(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_probed_scraped_and_drain_in_time(overlay: str) -> None:
    docs = rendered(overlay)
    assert checks.check_hardening(docs) == []
    assert checks.check_long_running(docs) == []
    assert checks.check_edge_drain(docs) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_only_real_callers_in(overlay: str) -> None:
    docs = rendered(overlay)
    policies = {d["metadata"]["name"]: d["spec"] for d in checks.of_kind(docs, "NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def ports_by_caller(target: str) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for spec in policies.values():
            if spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != target:
                continue
            for rule in spec.get("ingress", []):
                ports = {int(p["port"]) for p in rule.get("ports", [])}
                for peer in rule.get("from", [{"podSelector": {"matchLabels": {"*": "*"}}}]):
                    labels = peer["podSelector"]["matchLabels"]
                    name = labels.get("app.kubernetes.io/name") or (
                        "opted-in" if labels.get("aiport.io/gateway-client") == "true" else "*"
                    )
                    found.setdefault(name, set()).update(ports)
        return found

    def callers(target: str) -> set[str]:
        return set(ports_by_caller(target))

    # Internal callers of the typed gRPC API: only labelled pods in labelled namespaces.
    assert callers("gateway") == {"edge", "console", "opted-in"}
    (internal,) = policies["gateway-from-internal-callers"]["ingress"][0]["from"]
    assert internal["namespaceSelector"] == {"matchLabels": {"aiport.io/gateway-clients": "true"}}
    assert callers("billing") == {"gateway", "jobs", "accounts", "payments"}
    # The gateway on gRPC; the edge on the webhook listener only (notifications, health).
    assert ports_by_caller("payments") == {"gateway": {50057}, "edge": {9330}}
    assert callers("accounts") == {"console", "gateway"}
    assert callers("providers") == {"gateway"}
    assert callers("jobs") == {"gateway", "worker-image", "worker-video"}
    assert callers("files") == {"edge"}
    assert callers("console") == {"edge"}
    assert callers("edge") == {"*"}
    if overlay == "dev":
        assert ports_by_caller("pay-sandbox") == {"payments": {9110}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_referenced_secrets_are_documented(overlay: str) -> None:
    readme = (K8S / "README.md").read_text()
    for pod in checks.pods(rendered(overlay)):
        for container in pod.containers():
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] in (BACKING, UPSTREAM_KEYS, SERVICE_TOKENS, PAYMENT_GATEWAYS)
                    assert f"{ref['key']}=" in readme, f"README: how to create {ref['key']}"


def test_dockerfile_builds_what_the_manifests_run() -> None:
    dockerfile = (REPO / "deploy/docker/Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert checks.check_dockerfile(dockerfile, makefile, path_exists, module_exists) == []


def test_config_copies_equal_their_originals() -> None:
    assert sync_config.stale_copies() == []


def test_envoy_config_is_a_fresh_render_of_the_template() -> None:
    assert render_envoy.RENDERED.read_text() == render_envoy.rendered(), (
        "run python -m deploy.k8s.sync_config"
    )


def test_strict_schema_validation_rejects_a_misspelled_field() -> None:
    deployment = checks.find(rendered("production"), "Deployment", "gateway", "aiport")
    assert deployment is not None
    deployment = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_edge_finds_its_descriptor_and_lua_where_image_and_configmap_put_them() -> None:
    dockerfile = (REPO / "deploy/docker/Dockerfile").read_text()
    assert f"--descriptor_set_out={render_envoy.DESCRIPTOR}" in dockerfile
    docs = rendered("production")
    edge = next(p for p in checks.pods(docs) if p.name == "edge")
    container = edge.spec["containers"][0]
    config = checks.envoy_config(docs, edge, container)
    lua_files = [
        f["typed_config"]["default_source_code"]["filename"]
        for listener in config["static_resources"]["listeners"]
        for chain in listener.get("filter_chains", [])
        for network in chain["filters"]
        for f in network["typed_config"].get("http_filters", [])
        if f["name"] == "envoy.filters.http.lua"
    ]
    assert lua_files == [str(render_envoy.LUA)]
    mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == str(render_envoy.LUA.parent)
    )
    volume = next(v for v in edge.spec["volumes"] if v["name"] == mount["name"])
    config_map = checks.find(docs, "ConfigMap", volume["configMap"]["name"], "aiport")
    assert config_map is not None and render_envoy.LUA.name in config_map["data"]


def test_the_edge_names_clients_by_a_trusted_address() -> None:
    config = yaml.safe_load(render_envoy.RENDERED.read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = manager["typed_config"]
    assert typed["use_remote_address"] is True
    assert typed["xff_num_trusted_hops"] == render_envoy.XFF_TRUSTED_HOPS == 1
    added = typed["route_config"]["request_headers_to_add"]
    assert {
        "header": {
            "key": "x-aiport-client-address",
            "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    } in added
    with pytest.raises(ValueError):
        local_envoy.render(
            replace(render_envoy.EDGE, xff_num_trusted_hops=-1), render_envoy.DESCRIPTOR
        )
