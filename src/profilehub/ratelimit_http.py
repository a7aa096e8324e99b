"""Answer an org's requests over its rate limit with 429, before the body is read.

Sits just inside the credential gate: the org is the credential's (the gate's, or checked here
for requests without a body, with the same cached functions). A request whose credential does
not check out is passed on untouched, to be refused by its route as before. Limited orgs get the
``RateLimit-*`` headers on every answer; a 429 adds ``Retry-After``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from profilehub.auth import Principal
from profilehub.cdp.routes import cdp_credential
from profilehub.crm.routes import crm_credential
from profilehub.errors import TooManyRequests
from profilehub.gate import _bearer, _header, closing
from profilehub.http import checked_principal, domain_error_response
from profilehub.ratelimit import LIMITED_PREFIXES, Decision, RateLimiter
from profilehub.request_log import note_org


def rate_headers(decision: Decision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset),
    }


async def _principal(scope: Scope) -> Principal | None:
    known = checked_principal(scope)
    if known is not None:
        return known
    state = scope["app"].state
    path: str = scope["path"]
    try:
        if path.startswith("/cdp/v1/"):
            return await cdp_credential(
                state, _header(scope, b"apikey"), _bearer(scope), _header(scope, b"orgid")
            )
        return crm_credential(state, _bearer(scope))
    except Exception:  # refused, or not checkable now: the route answers it
        return None


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter: RateLimiter | None = None
        if scope["type"] == "http" and scope["path"].startswith(LIMITED_PREFIXES):
            limiter = scope["app"].state.rate_limiter
        decision = None
        try:
            # The common case, no org limited at all, costs one cached lookup.
            if limiter is not None and limiter.limits.any():
                principal = await _principal(scope)
                if principal is not None:
                    # A 429 is answered here, before the route: the log names the org it refused.
                    note_org(scope, principal.org_id)
                    decision = await limiter.check(principal.org_id)
        except Exception:  # the limits cannot be read (database down): the route answers that
            decision = None
        if decision is None:
            await self.app(scope, receive, send)
            return
        headers = rate_headers(decision)
        if not decision.allowed:
            refusal = TooManyRequests(
                f"over this org's rate limit of {decision.limit} requests per "
                f"{'second' if decision.window == 1 else 'minute'}; retry after {decision.reset} s",
                headers={"Retry-After": str(decision.reset), **headers},
            )
            await closing(domain_error_response(refusal), scope)(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
