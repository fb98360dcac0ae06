"""Bench-only Django modules for bench/http_presign.py (never imported by backend/)."""
