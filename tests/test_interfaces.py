"""Every implementer of the routing interfaces provides them completely (zope verifyObject)."""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface.verify import verifyClass, verifyObject

from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.chain import RoutingChain
from sipgate_proxy.routing.static import StaticRouter, StaticRouterFactory


def test_static_router_factory_provides_irouterfactory_and_iplugin() -> None:
    """StaticRouterFactory is a complete IRouterFactory and an IPlugin, so twisted.plugin can find it."""
    factory = StaticRouterFactory()
    assert verifyObject(IRouterFactory, factory)
    assert IPlugin.providedBy(factory)
    assert verifyClass(IRouterFactory, StaticRouterFactory)


def test_static_router_provides_irouter() -> None:
    """StaticRouter, even without routes, is a complete IRouter."""
    assert verifyObject(IRouter, StaticRouter(()))


def test_routing_chain_provides_irouter() -> None:
    """RoutingChain is itself an IRouter, so chains can be used wherever a router is expected."""
    assert verifyObject(IRouter, RoutingChain([]))
    assert verifyObject(IRouter, RoutingChain([("static", StaticRouter(()))]))


def test_registered_plugin_object_is_the_static_factory() -> None:
    """The object the twisted/plugins drop-in registers provides IRouterFactory with the name 'static'."""
    from twisted.plugins.sipgate_proxy_plugin import static_router

    assert verifyObject(IRouterFactory, static_router)
    assert static_router.name == "static"
