"""What the domain runs on."""
