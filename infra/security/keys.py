"""Asymmetric keys as PEM files: load, generate, and publish as JWKs with RFC 7638 key ids.

One key type serves every use (the platform signing its downstream calls, the development
identity provider signing operator tokens): EC P-256 for ES256, or RSA for RS256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# Members of each key type that RFC 7638 hashes, in its order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


def load_private_key(path: Path) -> PrivateKey:
    """A PEM private key (unencrypted PKCS#8 or traditional) from `path`."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path}: only EC and RSA private keys are supported")
    return key


def load_public_key(path: Path) -> PublicKey:
    """A PEM public key from `path`; a private key file gives its public half."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"{path}: only EC and RSA public keys are supported")
    return key


def generate_private_key(path: Path) -> PrivateKey:
    """Write a new EC P-256 key to `path` (mode 0600) unless one is there; return the key."""
    if path.exists():
        return load_private_key(path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The JWS algorithm a key signs with: ES256 for EC P-256, RS256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError("EC keys must use the P-256 curve (ES256)")
        return "ES256"
    return "RS256"


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, Any]:
    """The public JWK of `key`, with `kid` (its RFC 7638 thumbprint), `alg` and `use`."""
    public = (
        key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    )
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(canonical).digest()
    jwk["kid"] = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    jwk["alg"] = algorithm_for(public)
    jwk["use"] = "sig"
    return jwk
