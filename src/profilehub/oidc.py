"""OIDC/Okta-style JWTs for the CDP dialect: signature, issuer, audience and expiry checks.

The key set comes from a JWKS file or URL (``PROFILEHUB_JWT_JWKS``). A valid token proves who the
caller is (``iss`` + ``sub``); which orgs that subject may use, with which scopes, is granted per
org with ``profilehub jwt allow`` (see ``auth.allow_jwt_subject``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt

from profilehub.errors import Unauthorized

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


class JwtVerifier:
    def __init__(self, issuer: str, audience: str, jwks: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if jwks.startswith(("https://", "http://")):
            # Keys are fetched on first use and cached; a new kid triggers one refetch.
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=300)
        else:
            self._keys = jwt.PyJWKSet.from_json(Path(jwks).read_text())

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise Unauthorized(f"no key with kid {kid!r} in the configured key set", field="Authorization")

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; 401 naming Authorization for any defect."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key(token),
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(f"invalid JWT: {exc}", field="Authorization") from exc
        return claims


def token_scopes(claims: dict[str, Any]) -> frozenset[str] | None:
    """Scopes the token itself carries (Okta ``scp`` list or OAuth ``scope`` string), if any."""
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(str(s) for s in scp)
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    return None
