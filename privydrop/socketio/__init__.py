"""Socket.IO v5 on top of Engine.IO: packets, namespaces, sockets, acks, rooms.

Public API for the layers above (import from the modules):

  - L{privydrop.socketio.server.SocketIOServer}: the Engine.IO application;
    C{of(name)}, C{connection_count()}, C{socket_count()}, C{disconnect_all()}.
  - L{privydrop.socketio.namespace.Namespace}: C{on_connect}, C{on},
    C{on_disconnecting}, C{on_disconnect}, C{sockets}, C{get_socket},
    C{to(room).emit}, C{emit}, C{emit_to_socket}.
  - L{privydrop.socketio.sockets.Socket}: C{id}, C{handshake}, C{rooms},
    C{connected}, C{emit}, C{emit_with_ack}, C{to(room).emit}, C{join},
    C{leave}, C{disconnect}.
  - L{privydrop.socketio.errors}: C{ConnectionRefused} and the limit errors.

Nothing here knows PrivyDrop; Engine.IO is reached only through
C{privydrop.engineio.interface}.
"""
