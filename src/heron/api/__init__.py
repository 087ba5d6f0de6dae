"""HTTP routers: thin, no SQL and no business logic."""
