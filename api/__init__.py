"""The REST facade: validates input, starts/signals/queries workflows, reads tenant rows."""
