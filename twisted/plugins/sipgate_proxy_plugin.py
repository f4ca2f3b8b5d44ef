"""twistd entry point and the built-in routers, found by twisted.plugin.

This directory is a Twisted plugin drop-in directory: it must never get an
``__init__.py``.
"""

from twisted.application.service import ServiceMaker

from sipgate_proxy.registrar.router import RegistrarRouterFactory
from sipgate_proxy.routing.dialplan import DialplanRouterFactory
from sipgate_proxy.routing.dispatcher import DispatcherRouterFactory
from sipgate_proxy.routing.lcr import LcrRouterFactory
from sipgate_proxy.routing.static import StaticRouterFactory

sipgate_proxy = ServiceMaker(
    "sipgate-proxy",
    "sipgate_proxy.tap",
    "A stateful SIP proxy with routing plugins.",
    "sipgate-proxy",
)

static_router = StaticRouterFactory()
dialplan_router = DialplanRouterFactory()
lcr_router = LcrRouterFactory()
dispatcher_router = DispatcherRouterFactory()
registrar_router = RegistrarRouterFactory()
