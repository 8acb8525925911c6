"""`make bench`: provisioning latency and throughput, Temporal against a direct baseline."""
