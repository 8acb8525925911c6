"""The handbook's reference pages, generated from the code so that they cannot drift from it."""
