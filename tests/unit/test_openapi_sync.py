"""deploy/openapi/openapi.yaml describes exactly the REST surface the protos'
google.api.http annotations give the edge: same (method, path) pairs, no more,
no fewer. The document is also a valid OpenAPI 3.1 description."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTORS = ROOT / "gen" / "aiport.pb"
OPENAPI = ROOT / "deploy" / "openapi" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_TEMPLATE_VAR = re.compile(r"\{([^}=]+)(=[^}]*)?\}")

Route = tuple[str, str]


def _normalise(path: str) -> str:
    """`/v1/jobs/{job_id}` and `/v1/jobs/{id=*}` both become `/v1/jobs/{}`."""
    return _TEMPLATE_VAR.sub("{}", path)


def _rule_routes(rule: http_pb2.HttpRule) -> set[Route]:
    routes: set[Route] = set()
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        routes.add((rule.custom.kind.lower(), _normalise(rule.custom.path)))
    elif pattern is not None:
        routes.add((pattern, _normalise(getattr(rule, pattern))))
    for extra in rule.additional_bindings:
        routes |= _rule_routes(extra)
    return routes


def proto_routes() -> set[Route]:
    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString(DESCRIPTORS.read_bytes())
    routes: set[Route] = set()
    for file in descriptors.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                routes |= _rule_routes(method.options.Extensions[annotations_pb2.http])
    return routes


def _document() -> dict[str, Any]:
    doc = yaml.safe_load(OPENAPI.read_text())
    assert isinstance(doc, dict)
    return doc


def openapi_routes() -> set[Route]:
    routes: set[Route] = set()
    for path, item in _document()["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                routes.add((method, _normalise(path)))
    return routes


@pytest.fixture(scope="module", autouse=True)
def _descriptors_built() -> None:
    if not DESCRIPTORS.exists():
        pytest.fail(f"{DESCRIPTORS} is missing: run `make gen`")


def test_every_annotated_method_is_documented_and_nothing_else() -> None:
    from_protos = proto_routes()
    documented = openapi_routes()
    assert from_protos, "no google.api.http annotations found in gen/aiport.pb"
    assert from_protos - documented == set(), "in the protos but not in openapi.yaml"
    assert documented - from_protos == set(), "in openapi.yaml but not in the protos"


def test_the_chat_alias_is_an_additional_binding() -> None:
    routes = proto_routes()
    assert ("post", "/v1/chat/completions") in routes
    assert ("post", "/v1/text/completions") in routes


def test_path_parameters_are_declared() -> None:
    for path, item in _document()["paths"].items():
        names = {m.group(1) for m in _TEMPLATE_VAR.finditer(path)}
        for method in HTTP_METHODS:
            if method not in item:
                continue
            parameters = [_resolved(p) for p in item[method].get("parameters", [])]
            declared = {p["name"] for p in parameters if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}"


def _resolved(parameter: dict[str, Any]) -> dict[str, Any]:
    """A parameter as written, or the shared one it refers to (components/parameters)."""
    ref = parameter.get("$ref")
    if ref is None:
        return parameter
    shared: dict[str, Any] = _document()["components"]["parameters"][ref.rsplit("/", 1)[-1]]
    return shared


def test_only_pricing_is_public() -> None:
    doc = _document()
    assert doc["security"] == [{"bearerAuth": []}]
    public = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in HTTP_METHODS
        if method in item and item[method].get("security") == []
    }
    assert public == {("get", "/v1/pricing")}


def test_every_error_response_uses_the_error_shape() -> None:
    doc = _document()
    responses = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            for status, response in item[method]["responses"].items():
                if int(status) < 400:
                    continue
                resolved = responses[response["$ref"].rsplit("/", 1)[-1]]
                schema = resolved["content"]["application/json"]["schema"]
                # Anthropic's Messages API answers in Anthropic's error shape.
                shape = "MessagesErrorBody" if path.startswith("/v1/messages") else "Error"
                assert schema == {"$ref": f"#/components/schemas/{shape}"}, (
                    f"{method.upper()} {path} {status}"
                )


def test_the_document_is_valid_openapi_3_1() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    doc = _document()
    assert str(doc["openapi"]).startswith("3.1")
    validator.validate(doc)
