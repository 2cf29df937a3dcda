"""The HTTP edge: what every HTTP-facing part shares, and the one site.

  - L{privydrop.web.origins}: which browser origins are allowed (pure).
  - L{privydrop.web.cors}: the CORS headers for the API and the polling
    transport, from that decision (pure, one module for both).
  - L{privydrop.web.clientip}: which address a request comes from, under
    the trusted-proxy rule, and which client it counts as for every
    per-client limit (pure).
  - L{privydrop.web.site}: the site on the one listening port: routing to
    the REST API and Engine.IO resources, and connection-level protection.

Nothing here knows rooms, Socket.IO or the store; the site knows the
resources it routes to only as C{IResource}s.
"""
