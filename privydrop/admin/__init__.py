"""C{privydrop-admin}: what an operator runs against the deployment's Redis.

The Node backend ships scripts beside its code (export the referrer
statistics, watch Redis, clean up); here they are one console command,
installed with the package, reading the same settings as the server (the
C{.env} file, the environment, C{REDIS_URL} or C{REDIS_HOST}...):

  - L{privydrop.admin.referrers}: the daily referrer counts as CSV or JSON;
  - L{privydrop.admin.monitor}: rooms, joined sockets, rate-limit windows,
    keys without a TTL, Redis memory, refreshed in a terminal;
  - L{privydrop.admin.cleanup}: keys of the schema without a TTL, and room
    members whose socket binding is gone; removed only with C{--apply}.

A command-line tool may block, so it speaks RESP over a plain socket
(L{privydrop.admin.client}) instead of using the server's Twisted client;
it reads the key schema from L{privydrop.store.keys}.
"""
