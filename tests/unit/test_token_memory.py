"""The verifier remembers a verified token (by its sha256) until its own expiry, never longer,
in a bounded LRU: a read served from memory costs no signature check."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from api.auth import Principal, StaticKey, TokenVerifier
from api.errors import Unauthorized
from infra.security.keys import public_jwk
from tests.support.polling import eventually

AUDIENCE = "platform-service"
ISSUER = "https://idp.test"


class CountingKey:
    """The static key, counting how often a verification asked for it."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._static = StaticKey(key.public_key())
        self.lookups = 0

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        self.lookups += 1
        return await self._static.key_for(kid)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def token(key: ec.EllipticCurvePrivateKey, *, sub: str = "alice", ttl: int = 300) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "scope": "tenants:read",
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": public_jwk(key)["kid"]})


def verifier(keys: CountingKey, **options: Any) -> TokenVerifier:
    return TokenVerifier(keys, audience=AUDIENCE, issuer=ISSUER, algorithms=("ES256",), **options)


async def test_a_verified_token_is_remembered(ec_key: ec.EllipticCurvePrivateKey) -> None:
    keys = CountingKey(ec_key)
    check = verifier(keys)
    presented = token(ec_key)

    first = await check.verify(presented)
    again = await check.verify(presented)

    assert first == again == Principal("alice", frozenset({"tenants:read"}))
    assert keys.lookups == 1


async def test_a_remembered_token_is_verified_again_at_its_expiry(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    keys = CountingKey(ec_key)
    clock = Clock()
    check = verifier(keys, clock=clock)
    presented = token(ec_key, ttl=300)
    expires = jwt.decode(presented, options={"verify_signature": False})["exp"]
    await check.verify(presented)

    clock.now = expires - 1
    await check.verify(presented)
    assert keys.lookups == 1

    clock.now = expires
    await check.verify(presented)
    assert keys.lookups == 2


async def test_no_token_is_remembered_longer_than_remember_for(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    keys = CountingKey(ec_key)
    clock = Clock()
    check = verifier(keys, clock=clock, remember_for=timedelta(seconds=60))
    presented = token(ec_key, ttl=3600)
    await check.verify(presented)

    clock.now += 59
    await check.verify(presented)
    assert keys.lookups == 1

    clock.now += 2
    await check.verify(presented)
    assert keys.lookups == 2


async def test_an_expired_token_is_refused_though_it_was_remembered(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    check = verifier(CountingKey(ec_key), leeway=timedelta(0))
    presented = token(ec_key, ttl=1)
    assert (await check.verify(presented)).subject == "alice"

    async def outcome() -> str:
        try:
            return (await check.verify(presented)).subject
        except Unauthorized as error:
            return error.detail

    assert await eventually(outcome, lambda d: d != "alice", timeout=5) == "the token has expired"


async def test_memory_is_bounded_and_forgets_the_least_recently_used(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    keys = CountingKey(ec_key)
    check = verifier(keys, remembered_tokens=2)
    a, b, c = (token(ec_key, sub=name) for name in "abc")

    await check.verify(a)
    await check.verify(b)
    await check.verify(a)
    await check.verify(c)
    assert keys.lookups == 3

    # c and a (used after b) are remembered; b was forgotten to make room for c.
    await check.verify(c)
    await check.verify(a)
    assert keys.lookups == 3
    await check.verify(b)
    assert keys.lookups == 4


async def test_a_refused_token_is_not_remembered(ec_key: ec.EllipticCurvePrivateKey) -> None:
    keys = CountingKey(ec_key)
    check = verifier(keys)
    good = token(ec_key)
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"

    for _ in range(2):
        with pytest.raises(Unauthorized):
            await check.verify(tampered)

    assert keys.lookups == 2
