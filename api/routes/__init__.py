"""The API's routers: tenants (and their offboarding), admin, health, JWKS; `common` holds what
the tenant routes share."""
