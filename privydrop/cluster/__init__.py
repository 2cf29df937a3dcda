"""Several processes on one Redis: the cluster adapter.

It implements the Socket.IO layer's adapter (L{privydrop.socketio.adapter})
and routes broadcasts and sends to the other processes over Redis pub/sub.
The Socket.IO layer never imports this package; the service tree plugs it in.
"""
