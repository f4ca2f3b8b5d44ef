"""Protecting the proxy: trusted peers and flood limits."""
