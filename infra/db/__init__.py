"""PostgreSQL: repositories (all SQL on metadata), storage DDL, metadata migrations."""
