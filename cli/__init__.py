"""platformctl: the command line of Platform Service, for operators and CI/CD pipelines."""
