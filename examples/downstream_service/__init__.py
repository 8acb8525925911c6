"""A reference downstream service: applies versioned SQL migrations into a tenant's storage.

Run it as `python -m examples.downstream_service --name auth-service --port 8102` or
`uvicorn examples.downstream_service.app:app`, with `DOWNSTREAM_PLATFORM_JWKS_URL` (the platform's
`/.well-known/jwks.json`) or `DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE` set: it accepts migrate calls
only with a valid bearer token signed by the platform for this service, and will not start
without a way to check one. It is deliberately independent of the platform's
own packages: a real downstream service lives in another codebase and only shares the HTTP contract.
"""
