"""sipgate-proxy: a stateful SIP proxy on Twisted with routing plugins."""

__version__ = "0.1.0"
