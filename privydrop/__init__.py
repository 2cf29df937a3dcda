"""PrivyDrop signaling backend: REST API and Socket.IO signaling on Twisted."""

__version__ = "0.1.0"
