"""`DrainServerWorkflow`: every tenant of a storage server moved off it."""
