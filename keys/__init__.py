"""The default trust store (package data): public keys and policy.toml; see README.md."""
