"""The console's browser security rules as pure functions: the CSP, CSRF
tokens, origins and redirect targets."""

from __future__ import annotations

import pytest

from services.console import security


def directives() -> dict[str, str]:
    parts = [p.strip().split(" ", 1) for p in security.CSP.split(";")]
    return {name: value for name, value in parts}


def test_csp_allows_only_our_own_files() -> None:
    csp = directives()
    assert csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert csp["form-action"] == "'self'"
    for name, value in csp.items():
        # No inline code, no eval, no other origin, anywhere.
        for loose in ("'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:", "data:"):
            assert loose not in value.split(), (name, value)


def test_every_security_header_is_there() -> None:
    headers = security.SECURITY_HEADERS
    assert headers["Content-Security-Policy"] == security.CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin")
    assert headers["X-Frame-Options"] == "DENY"


def test_a_token_matches_only_its_binding() -> None:
    binding, other = security.new_binding(), security.new_binding()
    token = security.csrf_token(binding)
    assert security.csrf_matches(binding, token)
    assert not security.csrf_matches(other, token)
    assert not security.csrf_matches(binding, security.csrf_token(other))
    assert not security.csrf_matches(binding, token[:-1])
    assert not security.csrf_matches(binding, token + "A")


def test_the_token_is_stable_and_does_not_reveal_the_binding() -> None:
    binding = security.new_binding()
    assert security.csrf_token(binding) == security.csrf_token(binding)
    assert binding not in security.csrf_token(binding)
    assert len(binding) >= security.MIN_BINDING_CHARS


@pytest.mark.parametrize(
    ("binding", "submitted"),
    [(None, "x"), ("", ""), ("short", None), ("short", "short")],
)
def test_missing_or_weak_pieces_never_match(binding: str | None, submitted: str | None) -> None:
    assert not security.csrf_matches(binding, submitted)


def test_a_weak_binding_cannot_make_a_token() -> None:
    with pytest.raises(ValueError):
        security.csrf_token("too-short")


def test_a_weak_binding_never_matches_even_its_own_hash() -> None:
    # An attacker who plants a short cookie and computes its hash still fails.
    import base64
    import hashlib

    weak = "a" * 8
    digest = hashlib.sha256(b"aiport-console-csrf-v1\x00" + weak.encode()).digest()
    forged = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert not security.csrf_matches(weak, forged)


@pytest.mark.parametrize(
    ("origin", "ours", "ok"),
    [
        (None, "http://127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", True),
        ("HTTPS://Aiport.ID", "https://aiport.id", True),
        ("https://evil.example", "https://aiport.id", False),
        ("null", "https://aiport.id", False),
        ("https://aiport.id.evil.example", "https://aiport.id", False),
        ("http://aiport.id", "https://aiport.id", False),
    ],
)
def test_same_origin(origin: str | None, ours: str, ok: bool) -> None:
    assert security.same_origin(origin, ours) is ok


@pytest.mark.parametrize(
    ("scheme", "host", "origin"),
    [
        ("http", "127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https", "aiport.id:443", "https://aiport.id"),
        ("http", "Aiport.ID:80", "http://aiport.id"),
        ("https", "aiport.id:8443", "https://aiport.id:8443"),
    ],
)
def test_origin_of_a_request(scheme: str, host: str, origin: str) -> None:
    assert security.origin_of(scheme, host) == origin


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/pricing", "/pricing"),
        ("/docs#errors", "/docs#errors"),
        ("/dashboard/usage?from=2026-01-01", "/dashboard/usage?from=2026-01-01"),
        (None, "/"),
        ("", "/"),
        ("pricing", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("/\tevil", "/"),
    ],
)
def test_redirects_stay_on_this_site(target: str | None, safe: str) -> None:
    assert security.local_path(target) == safe
