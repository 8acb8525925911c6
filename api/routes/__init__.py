"""The API's routers, one module per resource: tenants, admin, health, JWKS."""
