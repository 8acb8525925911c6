"""A reference downstream service: applies versioned SQL migrations into a tenant's storage.

Run it as `python -m examples.downstream_service --name auth-service --port 8102` or
`uvicorn examples.downstream_service.app:app`, with `DOWNSTREAM_PLATFORM_JWKS_URL` (the platform's
`/.well-known/jwks.json`) or `DOWNSTREAM_PLATFORM_PUBLIC_KEY_FILE` set: it accepts migrate calls
only with a valid bearer token signed by the platform for this service, and will not start
without a way to check one. It is deliberately independent of the platform's
own packages: a real downstream service lives in another codebase and only shares the HTTP contract.

`DOWNSTREAM_DATABASE_URL` is the service's own role and its own database
(`postgresql://backend_service:pw@db:5432/backend_service`): the database keeps the service's
state (the token ids it has seen), and the role's credentials and options are used for tenant
storage too, at the host, port and database each call's `jdbcUrl` names. The platform grants
the role CONNECT on the database and USAGE and CREATE on the tenant's schema, so the service
owns what it creates, and another service's role cannot touch it. In each tenant schema the
service keeps its own history table, `<service>_schema_history` (see `migrator`).

With `DOWNSTREAM_EVENTS_URL` and `DOWNSTREAM_REPLY_KEY_FILE` it also runs in consumer mode:
the same calls as commands from NATS JetStream, answered with signed replies (see `consumer`).
"""
