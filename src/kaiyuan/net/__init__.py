"""Networking every layer may use: the SSRF-safe fetcher and HTML extraction."""
