"""HTTP resources, one module per endpoint; each is thin and calls the core."""
