"""Sans-IO SIP core: bytes, addresses and ``now`` in; messages and actions out.

Nothing in this package imports ``twisted.internet``, reads the clock or
touches a socket.
"""
