DROP TABLE tenant_migrations;
DROP TABLE tenants;
