"""Built-in implementations, one file each; see harness.registry.BUILTINS for the names."""
