"""A Kaleyra-compatible server for rehearsals and tests."""
