"""The operator console: server-rendered pages over the REST API, served by the API at /console."""
