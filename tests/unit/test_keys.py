"""PEM keys: generation, loading, the JWS algorithm of each key type and RFC 7638 key ids."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import RSAAlgorithm

from infra.security.keys import (
    algorithm_for,
    generate_private_key,
    load_private_key,
    load_public_key,
    public_jwk,
)

# RFC 7638 section 3.1: the example RSA key and its thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
    "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
    "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}


def _write_pem(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _public_pem(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_thumbprint_of_the_rfc_7638_example_key() -> None:
    public = RSAAlgorithm.from_jwk({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256"})
    assert isinstance(public, rsa.RSAPublicKey)

    jwk = public_jwk(public)

    assert jwk["kid"] == RFC7638_THUMBPRINT
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert (jwk["n"], jwk["e"]) == (RFC7638_N, "AQAB")


def test_ec_p256_key_is_es256_with_a_public_only_jwk(tmp_path: Path) -> None:
    key = generate_private_key(tmp_path / "ec.pem")
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    jwk = public_jwk(key)

    assert algorithm_for(key) == algorithm_for(key.public_key()) == "ES256"
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert not PRIVATE_MEMBERS & set(jwk)
    # RFC 7638 for EC: SHA-256 of {"crv","kty","x","y"} in that order, no whitespace.
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    assert jwk["kid"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert public_jwk(key.public_key()) == jwk


def test_rsa_key_is_rs256_with_a_public_only_jwk(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    loaded = load_private_key(_write_pem(tmp_path / "rsa.pem", key))

    jwk = public_jwk(loaded)

    assert algorithm_for(loaded) == "RS256"
    assert (jwk["kty"], jwk["alg"]) == ("RSA", "RS256")
    assert not PRIVATE_MEMBERS & set(jwk)
    assert jwk == public_jwk(key.public_key())


def test_ec_keys_on_other_curves_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        algorithm_for(key)
    with pytest.raises(ValueError, match="P-256"):
        public_jwk(key.public_key())


def test_key_types_other_than_ec_and_rsa_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ed25519.pem"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="only EC and RSA"):
        load_private_key(path)


def test_generate_writes_a_0600_pem_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "signing.pem"

    first = generate_private_key(path)
    written = path.read_bytes()
    second = generate_private_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert written.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert path.read_bytes() == written, "an existing key is never replaced"
    assert public_jwk(second)["kid"] == public_jwk(first)["kid"]
    assert public_jwk(load_private_key(path))["kid"] == public_jwk(first)["kid"]


def test_load_public_key_of_a_private_pem_gives_its_public_half(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    key = generate_private_key(path)

    public = load_public_key(path)

    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert _public_pem(public) == _public_pem(key.public_key())


def test_load_public_key_of_a_public_pem(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(_public_pem(key.public_key()))

    public = load_public_key(path)

    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()
