"""Property fuzzing of what reads credentials and addresses: credential extraction, static tokens,
JWT verification, Host and Origin headers, forwarded addresses. Nothing raises; nothing hostile
authenticates; the checks agree with their definitions."""

from __future__ import annotations

import base64
import ipaddress
import json
import time

import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.server import auth
from tether.server.hostcheck import (
    HostPolicy,
    forwarded_client,
    host_name,
    is_loopback_host,
    origin_allowed,
    parse_networks,
)
from tether.server.identity import Identity

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"fuzz-secret-of-enough-length-0123456789"
TOKEN = "the-one-valid-token-000000"
TOKENS = auth.TokenAuth([auth.TokenEntry(auth._digest(TOKEN), Identity("alice", None, False))])
VERIFIER = auth.JwtAuth(SECRET, "HS256", audience="tether")

text = st.text(max_size=200) | st.text(alphabet=st.characters(codec="utf-8"), max_size=50)
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
claims = st.dictionaries(
    st.sampled_from(["sub", "projects", "exp", "nbf", "iat", "aud", "tether_operator", "x"]),
    json_scalars | st.lists(json_scalars, max_size=3),
    max_size=7,
)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["Authorization", "X"]), header_text, max_size=2),
    st.dictionaries(st.sampled_from(["tether_token", "other"]), text, max_size=2),
    st.dictionaries(st.sampled_from(["token", "project"]), text, max_size=2),
)
def test_credential_extraction(headers: dict, cookies: dict, query: dict) -> None:
    credential = auth.credential_from(headers, cookies, query)
    sources = [cookies.get("tether_token"), query.get("token")]
    header = headers.get("Authorization", "").strip()
    if header.lower().startswith("bearer ") and header[7:].strip():
        assert credential == header[7:].strip()
    else:
        assert credential == next((s for s in sources if s), None)


@FUZZ
@given(text)
def test_no_forged_static_token_authenticates(credential: str) -> None:
    identity = TOKENS.authenticate(credential)
    assert (identity is not None) == (credential == TOKEN)


@FUZZ
@given(st.one_of(text, st.lists(text, min_size=3, max_size=3).map(".".join)))
def test_garbage_never_passes_jwt_verification(credential: str) -> None:
    assert VERIFIER.authenticate(credential) is None


@FUZZ
@given(claims, st.sampled_from(["HS256", "none", "RS256", "HS512", "", None]))
def test_unsigned_or_missigned_claims_never_pass(body: dict, alg: str | None) -> None:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(body).encode())
    for signature in ("", _b64(b"x" * 32)):
        assert VERIFIER.authenticate(f"{header}.{payload}.{signature}") is None


@FUZZ
@given(claims)
def test_signed_claims_give_a_well_formed_identity_or_none(body: dict) -> None:
    body = {"exp": int(time.time()) + 60, "aud": "tether", **body}
    try:
        token = jwt.encode(body, SECRET, algorithm="HS256")
    except (TypeError, ValueError):
        return  # PyJWT itself refuses to encode some claim types
    identity = VERIFIER.authenticate(token)
    if identity is None:
        return
    assert isinstance(body.get("sub"), str) and auth.is_valid_owner(identity.owner)
    assert identity.operator is (body.get("tether_operator") is True)
    assert identity.projects is None or all(isinstance(p, str) for p in identity.projects)
    assert identity.projects is not None or body.get("projects") == "*"


@FUZZ
@given(header_text | text)
def test_host_headers(header: str) -> None:
    policy = HostPolicy.for_bind("127.0.0.1", ["tether.test"])
    name = host_name(header)
    if policy.allows(header):
        assert name is not None and (is_loopback_host(name) or name == "tether.test")
    assert HostPolicy.for_bind("0.0.0.0", []).allows(header)


@FUZZ
@given(header_text | text, header_text)
def test_origins(origin: str, host: str) -> None:
    if origin_allowed(origin, host, ()):
        assert origin.strip().lower().rstrip("/") in (
            f"http://{host}".lower(),
            f"https://{host}".lower(),
        )


addresses = st.one_of(st.ip_addresses().map(str), header_text)


@FUZZ
@given(addresses, st.lists(addresses, max_size=5).map(", ".join) | header_text)
def test_forwarded_client_is_the_peer_or_a_real_address(peer: str, forwarded: str) -> None:
    trusted = parse_networks(["127.0.0.0/8", "10.0.0.0/8"])
    client = forwarded_client(peer, forwarded, trusted)
    if client != peer:
        ipaddress.ip_address(client)  # never a string the peer made up
        assert client in forwarded
