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
