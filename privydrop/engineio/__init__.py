"""Engine.IO v4 server on Twisted and Autobahn.

Public API:

  - L{privydrop.engineio.server.EngineServer}: sessions, handshake, request checks.
  - L{privydrop.engineio.resource.build_engineio_resource}: the twisted.web
    resource serving both transports, mounted at C{EngineSettings.path}.
  - L{privydrop.engineio.interface}: the seam with the layer above.

Knows nothing of Socket.IO; import it as C{privydrop.engineio} (a third-party
C{engineio} client package is installed too).
"""
