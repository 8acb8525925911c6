"""A reference downstream service: applies versioned SQL migrations into a tenant's storage.

Run it as `python -m examples.downstream_service --name auth-service --port 8102` or
`uvicorn examples.downstream_service.app:app`. It is deliberately independent of the platform's
own packages: a real downstream service lives in another codebase and only shares the HTTP contract.
"""
