from twisted.python import usage
from twisted.application.service import MultiService

class Options(usage.Options):
    optParameters = [["config", "c", "etc/sipgate-proxy.toml", "Path to the TOML config."]]

def makeService(options):
    return MultiService()
