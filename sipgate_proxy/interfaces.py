"""The interfaces operators implement to extend the proxy (Twisted style)."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IRouter(Interface):
    """Decides where a request goes."""

    def route(request, context):  # type: ignore[no-untyped-def]
        """Return a Forward, Redirect or Reject decision, None to pass the
        request to the next router, or a Deferred firing with one of those.

        ``request`` is a :class:`sipgate_proxy.sip.message.Request`;
        ``context`` a :class:`sipgate_proxy.routing.decisions.RequestContext`
        whose ``attrs`` carry what earlier routers found.
        """


class IRouterFactory(Interface):
    """Makes routers from their config table; provided with IPlugin."""

    name = Attribute("Key used in the config, for example 'static' or 'lcr'.")

    def make_router(config, reactor):  # type: ignore[no-untyped-def]
        """Validate ``config`` (the router's table) and return an IRouter.

        Raise :class:`sipgate_proxy.config.ConfigError` naming the key inside
        the table when the config is wrong. ``reactor`` provides IReactorTime.
        """


class IBranchObserver(Interface):
    """Learns how requests to a routing target went (passive health checks)."""

    def branch_event(target, event, status, now):  # type: ignore[no-untyped-def]
        """Called by the proxy core for a branch to ``target``.

        ``event`` is one of:

        - ``"response"``: the first response of any kind (100 included)
          arrived: the destination is alive;
        - ``"suspect"``: an INVITE was retransmitted (Timer A) with no
          response at all yet;
        - ``"final"``: the branch ended with ``status`` (408 after a timeout,
          503 after a transport error, 487 when cancelled).

        ``now`` is the reactor's time.
        """


class IRequestSender(Interface):
    """Lets a router send requests of its own (OPTIONS health probes)."""

    def send_options(uri, on_result, timeout=None):  # type: ignore[no-untyped-def]
        """Send OPTIONS to the sip: URI ``uri`` (its host, port and transport
        are the destination) and call ``on_result(status)`` once with the
        final status; 408 when nothing answered (within ``timeout`` seconds,
        or Timer F), 503 when the transport failed."""


class IRouterLifecycle(Interface):
    """Optional methods a router may provide; the service calls them if present."""

    def attach(sender):  # type: ignore[no-untyped-def]
        """Called once the proxy runs, with an IRequestSender."""

    def take_over(previous):  # type: ignore[no-untyped-def]
        """Called on reload with the router this one replaces (same name), to
        carry over state such as destination health."""

    def stop():  # type: ignore[misc,no-untyped-def]
        """Called when the router is replaced or the proxy stops."""
