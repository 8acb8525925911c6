"""The platform's per-call tokens (`CallSigner`) and the JWK Set that publishes its keys."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.security.keys import generate_private_key, load_private_key, public_jwk
from infra.security.signing import ISSUER, CallSigner, jwks_document

TTL = timedelta(minutes=5)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "platform-signing.pem"
    generate_private_key(path)
    return path


@pytest.fixture
def rsa_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "rsa.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _verified(token: str, key_file: Path, audience: str) -> dict[str, Any]:
    public = load_private_key(key_file).public_key()
    claims: dict[str, Any] = jwt.decode(
        token, public, algorithms=["ES256", "RS256"], audience=audience, issuer=ISSUER
    )
    return claims


def test_token_claims(key_file: Path) -> None:
    before = int(time.time())
    token = CallSigner(key_file, TTL).token(audience="auth-service", tenant_id="acme")
    after = int(time.time())

    claims = _verified(token, key_file, "auth-service")

    assert claims["iss"] == "platform-service"
    assert claims["aud"] == "auth-service"
    assert claims["tenantId"] == "acme"
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == TTL.total_seconds()
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_token_header_names_the_key_by_its_thumbprint(key_file: Path) -> None:
    token = CallSigner(key_file, TTL).token(audience="backend-service", tenant_id="acme")

    header = jwt.get_unverified_header(token)

    assert header["alg"] == "ES256"
    assert header["kid"] == public_jwk(load_private_key(key_file))["kid"]


def test_rsa_key_signs_rs256(rsa_key_file: Path) -> None:
    token = CallSigner(rsa_key_file, TTL).token(audience="backend-service", tenant_id="acme")

    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert _verified(token, rsa_key_file, "backend-service")["tenantId"] == "acme"


def test_every_token_has_its_own_jti(key_file: Path) -> None:
    signer = CallSigner(key_file, TTL)
    tokens = [signer.token(audience="backend-service", tenant_id="acme") for _ in range(50)]

    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}

    assert len(jtis) == len(tokens)


def test_token_for_one_service_does_not_verify_for_another(key_file: Path) -> None:
    token = CallSigner(key_file, TTL).token(audience="backend-service", tenant_id="acme")
    with pytest.raises(jwt.InvalidAudienceError):
        _verified(token, key_file, "auth-service")


def test_jwks_lists_the_current_key_first_then_the_previous_ones(
    tmp_path: Path, key_file: Path, rsa_key_file: Path
) -> None:
    older = tmp_path / "older.pem"
    generate_private_key(older)

    document = jwks_document(key_file, (rsa_key_file, older))

    kids = [key["kid"] for key in document["keys"]]
    expected = [
        public_jwk(load_private_key(path))["kid"] for path in (key_file, rsa_key_file, older)
    ]
    assert kids == expected
    assert [key["alg"] for key in document["keys"]] == ["ES256", "RS256", "ES256"]
    for key in document["keys"]:
        assert key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), "private members published"


def test_a_token_from_a_previous_key_verifies_with_the_published_set(
    tmp_path: Path, key_file: Path
) -> None:
    previous = tmp_path / "previous.pem"
    generate_private_key(previous)
    token = CallSigner(previous, TTL).token(audience="backend-service", tenant_id="acme")

    published = jwt.PyJWKSet.from_dict(jwks_document(key_file, (previous,)))
    key = published[jwt.get_unverified_header(token)["kid"]]

    claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="backend-service")
    assert claims["tenantId"] == "acme"


def test_jwks_of_the_current_key_alone(key_file: Path) -> None:
    document = jwks_document(key_file)
    assert [key["kid"] for key in document["keys"]] == [
        public_jwk(load_private_key(key_file))["kid"]
    ]


def test_next_keys_are_published_but_never_sign(key_file: Path, tmp_path: Path) -> None:
    """A rotation publishes the next key before the platform signs with it, so a verifier
    refetching on an unknown `kid` finds it; until the switch, tokens carry the current kid."""
    upcoming = tmp_path / "next.pem"
    generate_private_key(upcoming)
    previous = tmp_path / "previous.pem"
    generate_private_key(previous)
    current_kid = public_jwk(load_private_key(key_file))["kid"]
    next_kid = public_jwk(load_private_key(upcoming))["kid"]
    previous_kid = public_jwk(load_private_key(previous))["kid"]

    document = jwks_document(key_file, previous_key_files=(previous,), next_key_files=(upcoming,))
    token = CallSigner(key_file, TTL).token(audience="auth-service", tenant_id="acme")

    assert [k["kid"] for k in document["keys"]] == [current_kid, next_kid, previous_kid]
    assert all("d" not in k for k in document["keys"])
    assert jwt.get_unverified_header(token)["kid"] == current_kid
    _verified(token, key_file, "auth-service")


def test_a_key_named_twice_is_published_once(key_file: Path) -> None:
    document = jwks_document(key_file, next_key_files=(key_file,))

    assert len(document["keys"]) == 1
