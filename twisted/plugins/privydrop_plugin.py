"""The twistd plugin: C{twistd privydrop}. Everything else lives in L{privydrop.tap}."""

from twisted.application.service import ServiceMaker

privydrop = ServiceMaker(
    "PrivyDrop signaling backend",
    "privydrop.tap",
    "PrivyDrop REST API and Socket.IO signaling server",
    "privydrop",
)
