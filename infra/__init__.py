"""What the domain runs on: PostgreSQL, Temporal, telemetry, keys and signing, limits."""
