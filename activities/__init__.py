"""Activities: every piece of I/O the provisioning workflow does. Each may run more than once."""
