"""Composition root: the only package that knows every concrete class.

`serve` prepares the data dir, database and CA once (`startup`), then runs `--workers`
identical worker processes, this one included (`worker`). Each worker has its own gRPC
server, TLS front, database connections and certificate log, and accepts on the same port
through SO_REUSEPORT, so issuance scales across cores instead of sharing one interpreter.
The first process also serves the admin API (`admin`) and the metrics endpoint.

`agent` builds and runs the node agent (`meshca agent`). Nothing is imported here: the agent
must not load the server's database and Vault stack.
"""
