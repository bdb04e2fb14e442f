"""Authentication: access tokens, the login store and the login endpoint."""
