"""Reference services that play the platform's downstream side (not part of the platform)."""
