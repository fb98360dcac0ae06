"""Local stand-ins for the storage providers (development and tests; never imported by backend)."""
