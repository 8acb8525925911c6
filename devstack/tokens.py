"""Development keys and tokens, as `python -m devstack.tokens` (and `make token`).

The development identity provider is one EC P-256 key, `keys/dev-idp.pem` in the `make dev`
data folder, which `make dev` creates and tells the API to trust. Tokens it signs look like a
real provider's: ES256 with a `kid`, issuer `platform-dev-idp`, the API's audience, `sub`,
`iat`, `exp` and an OAuth `scope`.

    python -m devstack.tokens mint --sub alice --scope tenants:write --scope tenants:read
    python -m devstack.tokens init --dir /keys   # both development keys, if missing

Not for production: there, tokens come from the identity provider (PLATFORM_AUTH_JWKS_URL).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import jwt
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.auth import ALL_SCOPES
from infra.security.keys import algorithm_for, generate_private_key, load_private_key, public_jwk
from tenancy.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_ISSUER = "platform-dev-idp"
IDP_KEY_NAME = "dev-idp.pem"
SIGNING_KEY_NAME = "platform-signing.pem"
# What `make dev`'s operator token grants: every scope the API checks.
OPERATOR_SCOPES = ALL_SCOPES


class DevKeys(BaseSettings):
    """Where `make dev` keeps its data, and so its development keys."""

    model_config = SettingsConfigDict(env_prefix="PLATFORM_DEV_", extra="ignore")

    data_dir: Path = REPO_ROOT / ".devdata"

    @property
    def idp_key_file(self) -> Path:
        """The development identity provider's private key."""
        return self.data_dir / "keys" / IDP_KEY_NAME

    @property
    def signing_key_file(self) -> Path:
        """The platform's key for signing downstream calls."""
        return self.data_dir / "keys" / SIGNING_KEY_NAME


def init_keys(directory: Path) -> list[Path]:
    """Create the identity provider's and the platform's keys in `directory` unless present."""
    paths = [directory / IDP_KEY_NAME, directory / SIGNING_KEY_NAME]
    for path in paths:
        generate_private_key(path)
    return paths


def mint(
    key_file: Path,
    *,
    subject: str,
    scopes: Iterable[str],
    audience: str,
    ttl: timedelta = timedelta(hours=1),
    issuer: str = DEV_ISSUER,
) -> str:
    """A token for `subject` granting `scopes`, signed with the private key in `key_file`."""
    key = load_private_key(key_file)
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + int(ttl.total_seconds()),
        "scope": " ".join(scopes),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, key, algorithm=algorithm_for(key), headers={"kid": public_jwk(key)["kid"]}
    )


def _positive_seconds(value: str) -> timedelta:
    seconds = int(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return timedelta(seconds=seconds)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.tokens",
        description="Development tokens and keys for Platform Service.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    mint_cmd = commands.add_parser("mint", help="print a token signed by the development IdP")
    mint_cmd.add_argument("--sub", required=True, help="the token's subject (who acts)")
    mint_cmd.add_argument(
        "--scope",
        action="append",
        default=[],
        help="a scope to grant (repeatable; space-separated lists are split), "
        "e.g. tenants:write, tenants:read",
    )
    mint_cmd.add_argument(
        "--ttl", type=_positive_seconds, default=timedelta(hours=1), help="seconds (3600)"
    )
    mint_cmd.add_argument(
        "--key-file",
        type=Path,
        help="the IdP's private key (default: keys/dev-idp.pem in PLATFORM_DEV_DATA_DIR)",
    )
    mint_cmd.add_argument("--issuer", default=DEV_ISSUER, help=f"default: {DEV_ISSUER}")
    mint_cmd.add_argument("--audience", help="default: the API's PLATFORM_AUTH_AUDIENCE")
    init_cmd = commands.add_parser("init", help="create the development keys if missing")
    init_cmd.add_argument("--dir", type=Path, required=True, help="folder for the keys")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m devstack.tokens mint ...` or `... init --dir DIR`."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "init":
        for path in init_keys(args.dir):
            sys.stdout.write(f"{path}\n")
        return 0
    key_file: Path = args.key_file or DevKeys().idp_key_file
    if not key_file.is_file():
        parser.exit(
            2,
            f"no development identity provider key at {key_file}: start `make dev` once "
            "(it creates one), or pass --key-file\n",
        )
    token = mint(
        key_file,
        subject=args.sub,
        scopes=[scope for value in args.scope for scope in value.split()],
        audience=args.audience or get_settings().auth_audience,
        ttl=args.ttl,
        issuer=args.issuer,
    )
    sys.stdout.write(f"{token}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
