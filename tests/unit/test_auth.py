"""Bearer-token verification (keys made here, a JWKS from a real local server), scopes, and the
development tokens and keys `make dev` / `make token` hand out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import ALL_SCOPES, JwksKeys, Principal, StaticKey, TokenVerifier, scopes_from
from api.errors import ServiceUnavailable, Unauthorized
from api.main import create_app
from devstack import tokens
from devstack.dev import READY_MARKER, DevSettings, banner, dev_tokens, make_plan
from infra.security.keys import PrivateKey, generate_private_key, public_jwk
from tenancy.settings import Settings, get_settings
from tests.support.polling import eventually
from tests.support.servers import free_port, serve

AUDIENCE = "platform-service"
ISSUER = "https://idp.test"


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "scope": "tenants:read tenants:write",
    }
    return {key: value for key, value in (base | overrides).items() if value is not None}


def sign(key: PrivateKey, payload: dict[str, Any], *, kid: str | None = None) -> str:
    algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    headers = {"kid": kid if kid is not None else public_jwk(key)["kid"]}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def hand_made(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A JWS built byte by byte, for what a well-behaved library refuses to produce."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signature)}"


def verifier_for(
    key: PrivateKey,
    *,
    issuer: str | None = ISSUER,
    algorithms: tuple[str, ...] = ("RS256", "ES256"),
) -> TokenVerifier:
    return TokenVerifier(
        StaticKey(key.public_key()), audience=AUDIENCE, issuer=issuer, algorithms=algorithms
    )


async def rejected(verifier: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    error = caught.value
    assert error.status == 401
    challenge = error.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="platform-service", error="invalid_token"')
    # What the caller sent is never echoed back.
    for part in token.split("."):
        if len(part) > 8:
            assert part not in error.detail
            assert part not in challenge
    return error


async def test_valid_es256_token_gives_its_subject_and_scopes(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    principal = await verifier_for(ec_key).verify(sign(ec_key, claims()))

    assert principal == Principal("alice", frozenset({"tenants:read", "tenants:write"}))


async def test_valid_rs256_token_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    principal = await verifier_for(rsa_key).verify(sign(rsa_key, claims(sub="bob", scope="x")))

    assert principal == Principal("bob", frozenset({"x"}))


async def test_issuer_is_not_checked_when_none_is_configured(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    token = sign(ec_key, claims(iss="anyone"))

    assert (await verifier_for(ec_key, issuer=None).verify(token)).subject == "alice"
    await rejected(verifier_for(ec_key), token)


async def test_a_few_seconds_of_clock_skew_are_tolerated(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    now = int(time.time())
    token = sign(ec_key, claims(iat=now - 600, exp=now - 10, nbf=now + 10))

    assert (await verifier_for(ec_key).verify(token)).subject == "alice"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        pytest.param({"exp": int(time.time()) - 120}, "the token has expired", id="expired"),
        pytest.param({"nbf": int(time.time()) + 3600}, "the token is not valid yet", id="nbf"),
        pytest.param({"iat": int(time.time()) + 3600}, "the token is not valid yet", id="iat"),
        pytest.param(
            {"aud": "another-service"}, "the token is meant for another audience", id="audience"
        ),
        pytest.param(
            {"iss": "https://evil.test"},
            "the token comes from an issuer this service does not trust",
            id="issuer",
        ),
        pytest.param({"sub": None}, "the token lacks the sub claim", id="no-sub"),
        pytest.param({"exp": None}, "the token lacks the exp claim", id="no-exp"),
        pytest.param({"iat": None}, "the token lacks the iat claim", id="no-iat"),
        pytest.param({"aud": None}, "the token lacks the aud claim", id="no-aud"),
        pytest.param({"iss": None}, "the token lacks the iss claim", id="no-iss"),
        pytest.param({"sub": "  "}, "the token's sub claim is empty", id="blank-sub"),
        pytest.param({"exp": "tomorrow"}, "the token is malformed", id="exp-not-a-number"),
    ],
)
async def test_bad_claims_are_rejected_saying_why(
    ec_key: ec.EllipticCurvePrivateKey, overrides: dict[str, Any], detail: str
) -> None:
    error = await rejected(verifier_for(ec_key), sign(ec_key, claims(**overrides)))

    assert error.detail == detail
    assert f'error_description="{detail}"' in error.headers["WWW-Authenticate"]


async def test_signature_of_another_key_is_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    # Same kid as the trusted key: only the signature gives it away.
    token = sign(other, claims(), kid=public_jwk(ec_key)["kid"])

    error = await rejected(verifier_for(ec_key), token)

    assert error.detail == "the token's signature does not verify"


async def test_tampered_payload_is_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    header, _, signature = sign(ec_key, claims(scope="tenants:read")).split(".")
    forged = b64(json.dumps(claims(scope="tenants:write")).encode())

    error = await rejected(verifier_for(ec_key), f"{header}.{forged}.{signature}")

    assert error.detail == "the token's signature does not verify"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_alg_none_is_rejected(ec_key: ec.EllipticCurvePrivateKey, alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT"}, claims())

    error = await rejected(verifier_for(ec_key), token)

    assert error.detail == "the token's algorithm is not accepted; use one of RS256, ES256"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("key_type", ["ec", "rsa"])
async def test_hmac_signed_with_the_public_key_is_rejected(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, alg: str, key_type: str
) -> None:
    # The algorithm-confusion attack: the public key is public, so an HMAC "signed" with its
    # PEM as the secret verifies under a library that lets the token pick the algorithm.
    key: PrivateKey = ec_key if key_type == "ec" else rsa_key
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": alg, "typ": "JWT", "kid": public_jwk(key)["kid"]}
    unsigned = hand_made(header, claims()).rsplit(".", 1)[0]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    token = f"{unsigned}.{b64(hmac.new(pem, unsigned.encode(), digest).digest())}"

    error = await rejected(verifier_for(key), token)

    assert error.detail.startswith("the token's algorithm is not accepted")


async def test_allowed_algorithm_of_another_key_type_is_rejected(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    # RS256 is allowed, but the trusted key is an EC key: it verifies ES256 only.
    token = sign(rsa_key, claims(), kid=public_jwk(ec_key)["kid"])

    error = await rejected(verifier_for(ec_key), token)

    assert error.detail == "the token's algorithm does not match its signing key"


async def test_algorithm_outside_the_configured_list_is_rejected(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    error = await rejected(verifier_for(rsa_key, algorithms=("ES256",)), sign(rsa_key, claims()))

    assert error.detail == "the token's algorithm is not accepted; use one of ES256"


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b", "a.b.c", "x" * 5000, "bm90IGpzb24.e30.c2ln"],
    ids=["empty", "word", "two-parts", "three-junk", "long", "header-not-json"],
)
async def test_garbage_is_rejected_as_malformed(
    ec_key: ec.EllipticCurvePrivateKey, token: str
) -> None:
    error = await rejected(verifier_for(ec_key), token)

    assert error.detail == "the token is malformed"


async def test_signed_payload_that_is_not_a_claims_object_is_malformed(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    headers = {"kid": public_jwk(ec_key)["kid"]}
    for payload in (b"not json", b"[1, 2]"):
        token = jwt.PyJWS().encode(payload, ec_key, algorithm="ES256", headers=headers)

        error = await rejected(verifier_for(ec_key), token)

        assert error.detail == "the token is malformed"


@pytest.mark.parametrize(
    ("payload", "scopes"),
    [
        ({"scope": "tenants:read tenants:write"}, {"tenants:read", "tenants:write"}),
        ({"scope": "  tenants:read  "}, {"tenants:read"}),
        ({"scp": ["tenants:read", "tenants:write"]}, {"tenants:read", "tenants:write"}),
        ({"scp": "tenants:write"}, {"tenants:write"}),
        ({"scope": "a", "scp": ["b"]}, {"a", "b"}),
        ({"scope": ""}, set()),
        ({"scope": 5, "scp": {"tenants:write": True}}, set()),
        ({"scp": ["ok", 3, None, ""]}, {"ok"}),
        ({"roles": ["tenants:write"]}, set()),
        ({}, set()),
    ],
)
def test_scopes_from_scope_and_scp(payload: dict[str, Any], scopes: set[str]) -> None:
    assert scopes_from(payload) == frozenset(scopes)


def test_verifier_from_a_public_key_file(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    pem = tmp_path / "idp.pub.pem"
    pem.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    verifier = TokenVerifier.from_settings(
        Settings(auth_public_key_file=pem, auth_issuer=ISSUER, auth_jwks_url=None)
    )

    assert isinstance(verifier, TokenVerifier)


def test_a_key_outside_the_algorithm_list_refuses_to_start(tmp_path: Path) -> None:
    key_file = tmp_path / "idp.pem"
    generate_private_key(key_file)

    with pytest.raises(RuntimeError, match=r"holds an ES256 key.*allows only RS256"):
        TokenVerifier.from_settings(
            Settings(auth_public_key_file=key_file, auth_algorithms=("RS256",))
        )


def test_unknown_algorithms_cannot_be_configured() -> None:
    for algorithms in (("HS256",), ("none",), ("RS256", "HS256")):
        with pytest.raises(ValueError, match="auth_algorithms"):
            Settings(auth_algorithms=algorithms)


async def test_the_api_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    signing = tmp_path / "signing.pem"
    generate_private_key(signing)
    settings = Settings(
        # Nothing listens there: the check must come before any connection.
        database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/platform",
        signing_key_file=signing,
        auth_jwks_url=None,
        auth_public_key_file=None,
    )
    app = create_app(settings)

    with pytest.raises(RuntimeError) as caught:
        async with app.router.lifespan_context(app):
            pass

    assert "PLATFORM_AUTH_JWKS_URL" in str(caught.value)
    assert "PLATFORM_AUTH_PUBLIC_KEY_FILE" in str(caught.value)


@dataclass
class IdentityProvider:
    """A JWKS endpoint whose keys a test changes, counting the fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, *keys: PrivateKey) -> None:
        with self._lock:
            self.keys = [public_jwk(key) for key in keys]

    async def _jwks(self, request: Request) -> JSONResponse:
        with self._lock:
            self.fetches += 1
            return JSONResponse({"keys": list(self.keys)})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()
    with serve(provider.app()) as url:
        yield provider, f"{url}/.well-known/jwks.json"


def jwks_verifier(url: str, **options: float) -> TokenVerifier:
    return TokenVerifier(
        JwksKeys(url, **options), audience=AUDIENCE, issuer=ISSUER, algorithms=("RS256", "ES256")
    )


async def test_jwks_keys_are_cached_and_a_rotated_key_is_fetched(
    idp: tuple[IdentityProvider, str],
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    provider, url = idp
    provider.publish(ec_key)
    verifier = jwks_verifier(url, refresh_cooldown=0)
    before = provider.fetches

    assert (await verifier.verify(sign(ec_key, claims(sub="a")))).subject == "a"
    assert (await verifier.verify(sign(ec_key, claims(sub="b")))).subject == "b"
    assert provider.fetches == before + 1

    # Rotation: the provider now signs with a new key and publishes both.
    provider.publish(rsa_key, ec_key)
    assert (await verifier.verify(sign(rsa_key, claims(sub="c")))).subject == "c"
    assert provider.fetches == before + 2
    assert (await verifier.verify(sign(ec_key, claims(sub="d")))).subject == "d"
    assert provider.fetches == before + 2


async def test_jwks_unknown_or_missing_kid_is_rejected(
    idp: tuple[IdentityProvider, str], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    provider, url = idp
    provider.publish(ec_key)
    stranger = ec.generate_private_key(ec.SECP256R1())
    verifier = jwks_verifier(url, refresh_cooldown=0)

    unknown = await rejected(verifier, sign(stranger, claims()))
    assert unknown.detail == "the token's signing key is not published by the identity provider"
    no_kid = jwt.encode(claims(), ec_key, algorithm="ES256")
    missing = await rejected(verifier, no_kid)
    assert missing.detail == "the token has no kid header naming its signing key"


async def test_jwks_unknown_kids_refresh_at_most_once_per_cooldown(
    idp: tuple[IdentityProvider, str], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    provider, url = idp
    provider.publish(ec_key)
    verifier = jwks_verifier(url, refresh_cooldown=600)
    await verifier.verify(sign(ec_key, claims()))
    fetched = provider.fetches

    for attempt in range(5):
        await rejected(verifier, sign(ec_key, claims(), kid=f"invented-{attempt}"))

    assert provider.fetches == fetched


async def test_jwks_withdrawn_key_stops_verifying_once_the_cache_expires(
    idp: tuple[IdentityProvider, str],
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    provider, url = idp
    provider.publish(ec_key, rsa_key)
    verifier = jwks_verifier(url, lifespan=0.2, refresh_cooldown=0)
    assert (await verifier.verify(sign(ec_key, claims()))).subject == "alice"

    provider.publish(rsa_key)

    async def outcome() -> str:
        try:
            return (await verifier.verify(sign(ec_key, claims()))).subject
        except Unauthorized as error:
            return error.detail

    detail = await eventually(outcome, lambda d: d != "alice", timeout=10)
    assert detail == "the token's signing key is not published by the identity provider"


async def test_jwks_foreign_algorithms_are_refused_without_a_fetch(
    idp: tuple[IdentityProvider, str], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    provider, url = idp
    provider.publish(ec_key)
    fetched = provider.fetches
    verifier = jwks_verifier(url)
    kid = public_jwk(ec_key)["kid"]

    await rejected(verifier, hand_made({"alg": "none", "kid": kid}, claims()))
    await rejected(verifier, hand_made({"alg": "HS256", "kid": kid}, claims(), b"x" * 32))

    assert provider.fetches == fetched


async def test_jwks_that_cannot_be_read_is_a_503(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks_verifier(f"http://127.0.0.1:{free_port()}/jwks.json", timeout=2)

    with pytest.raises(ServiceUnavailable) as caught:
        await verifier.verify(sign(ec_key, claims()))

    assert caught.value.status == 503
    assert "identity provider" in caught.value.detail


def test_jwks_url_from_settings_is_used_over_a_key_file(
    idp: tuple[IdentityProvider, str], tmp_path: Path
) -> None:
    _, url = idp
    verifier = TokenVerifier.from_settings(
        Settings(auth_jwks_url=url, auth_public_key_file=tmp_path / "missing.pem")
    )

    assert isinstance(verifier, TokenVerifier)


# Development tokens and keys.


def test_init_creates_both_keys_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"

    assert tokens.main(["init", "--dir", str(folder)]) == 0
    created = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert set(created) == {tokens.IDP_KEY_NAME, tokens.SIGNING_KEY_NAME}
    assert created[tokens.IDP_KEY_NAME] != created[tokens.SIGNING_KEY_NAME]
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert capsys.readouterr().out.split() == [
        str(folder / tokens.IDP_KEY_NAME),
        str(folder / tokens.SIGNING_KEY_NAME),
    ]

    assert tokens.main(["init", "--dir", str(folder)]) == 0
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == created


async def test_minted_token_passes_the_api_verifier(tmp_path: Path) -> None:
    key_file = tmp_path / "dev-idp.pem"
    key = generate_private_key(key_file)

    token = tokens.mint(
        key_file,
        subject="alice",
        scopes=["tenants:write", "tenants:read"],
        audience=AUDIENCE,
        ttl=timedelta(minutes=10),
    )

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == public_jwk(key)["kid"]
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == tokens.DEV_ISSUER
    assert payload["exp"] - payload["iat"] == 600
    verifier = TokenVerifier.from_settings(
        Settings(auth_public_key_file=key_file, auth_issuer=tokens.DEV_ISSUER, auth_jwks_url=None)
    )
    principal = await verifier.verify(token)
    assert principal == Principal("alice", frozenset({"tenants:write", "tenants:read"}))


def test_mint_command_uses_the_dev_data_folder_and_the_api_audience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLATFORM_DEV_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PLATFORM_AUTH_AUDIENCE", "my-api")
    key = generate_private_key(tmp_path / "keys" / tokens.IDP_KEY_NAME)
    get_settings.cache_clear()
    try:
        code = tokens.main(
            ["mint", "--sub", "bob", "--scope", "tenants:read tenants:write", "--ttl", "60"]
        )
    finally:
        get_settings.cache_clear()

    assert code == 0
    token = capsys.readouterr().out.strip()
    payload = jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="my-api")
    assert payload["sub"] == "bob"
    assert payload["scope"] == "tenants:read tenants:write"
    assert payload["exp"] - payload["iat"] == 60


def test_mint_command_without_a_key_explains_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"

    with pytest.raises(SystemExit) as caught:
        tokens.main(["mint", "--sub", "bob", "--key-file", str(missing)])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "make dev" in err


@pytest.mark.parametrize("ttl", ["0", "-5", "soon"])
def test_mint_command_rejects_a_bad_ttl(ttl: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        tokens.main(["mint", "--sub", "bob", "--ttl", ttl, "--key-file", str(tmp_path)])


# What `make dev` tells its children and prints.


@pytest.mark.usefixtures("clean_env")
def test_make_dev_trusts_its_development_identity_provider(tmp_path: Path) -> None:
    dev = DevSettings(data_dir=tmp_path, backend_port=9101, auth_port=9102)
    plan = make_plan(dev, Settings(api_port=9000))

    assert plan.dev_idp
    assert plan.env["PLATFORM_AUTH_PUBLIC_KEY_FILE"] == str(tmp_path / "keys" / "dev-idp.pem")
    assert plan.env["PLATFORM_AUTH_ISSUER"] == tokens.DEV_ISSUER
    assert plan.env["PLATFORM_SIGNING_KEY_FILE"] == str(tmp_path / "keys" / "platform-signing.pem")
    services = plan.service_env()
    assert services["DOWNSTREAM_PLATFORM_JWKS_URL"] == "http://127.0.0.1:9000/.well-known/jwks.json"


@pytest.mark.usefixtures("clean_env")
def test_make_dev_leaves_a_configured_identity_provider_alone(tmp_path: Path) -> None:
    dev = DevSettings(data_dir=tmp_path)
    plan = make_plan(dev, Settings(auth_jwks_url="https://idp.example/jwks", auth_issuer="x"))

    assert not plan.dev_idp
    assert "PLATFORM_AUTH_PUBLIC_KEY_FILE" not in plan.env
    assert "PLATFORM_AUTH_ISSUER" not in plan.env
    assert dev_tokens(plan) is None
    text = banner(plan, None)
    assert "export TOKEN=" not in text
    assert '-H "Authorization: Bearer $TOKEN"' in text


@pytest.mark.usefixtures("clean_env")
async def test_make_dev_banner_hands_out_working_tokens(tmp_path: Path) -> None:
    dev = DevSettings(data_dir=tmp_path)
    plan = make_plan(dev, Settings(api_port=9000))
    generate_private_key(dev.idp_key_file)
    minted = dev_tokens(plan)
    assert minted is not None

    lines = banner(plan, minted).splitlines()

    assert any(line.startswith(READY_MARKER) for line in lines)
    assert f"  export TOKEN={minted.operator}" in lines
    assert f"  export READ_TOKEN={minted.viewer}" in lines
    assert f"  export SERVICE_TOKEN={minted.service}" in lines
    assert '  export ALICE_TOKEN=$(make -s token SUB=alice SCOPES="tenants:read")' in lines
    post = next(line for line in lines if "curl -s -X POST" in line)
    assert '-H "Authorization: Bearer $TOKEN"' in post
    verifier = TokenVerifier.from_settings(
        Settings(
            auth_public_key_file=Path(plan.env["PLATFORM_AUTH_PUBLIC_KEY_FILE"]),
            auth_issuer=plan.env["PLATFORM_AUTH_ISSUER"],
            auth_jwks_url=None,
        )
    )
    operator = await verifier.verify(minted.operator)
    viewer = await verifier.verify(minted.viewer)
    assert operator == Principal(
        "operator",
        frozenset(
            {
                "tenants:write",
                "tenants:read",
                "tenants:delete",
                "rollouts:write",
                "rollouts:read",
                "servers:write",
                "directory:read",
            }
        ),
    )
    assert operator.scopes == frozenset(ALL_SCOPES)
    assert viewer == Principal("viewer", frozenset({"tenants:read"}))
    assert await verifier.verify(minted.service) == Principal(
        "directory-client", frozenset({"directory:read"})
    )
    payload = jwt.decode(minted.operator, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 12 * 3600


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        pytest.param("a\x00b", "non-printable", id="nul"),
        pytest.param("alice\x1b]0;PWNED\x07", "non-printable", id="terminal-escape"),
        pytest.param("alice\nmallory", "non-printable", id="newline"),
        pytest.param("alice\u2028", "non-printable", id="line-separator"),
        pytest.param("a" * 201, "longer than 200", id="201-chars"),
    ],
)
async def test_a_subject_that_cannot_be_audited_is_rejected(
    ec_key: ec.EllipticCurvePrivateKey, subject: str, why: str
) -> None:
    """The subject is written to SQL (created_by, actor) and to logs: a NUL makes PostgreSQL
    raise, control characters would reach terminals."""
    error = await rejected(verifier_for(ec_key), sign(ec_key, claims(sub=subject)))

    assert why in error.detail


async def test_a_long_printable_subject_is_accepted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    subject = "svc:" + "é" * 196

    principal = await verifier_for(ec_key).verify(sign(ec_key, claims(sub=subject)))

    assert principal.subject == subject
