"""A Kubernetes API test server that real kubectl accepts, for tests, benchmarks and the lab.

`server` serves HTTP(S) and runs as `python -m lab.apiserver.server serve`; `store` keeps the
objects and their write semantics, `resources` the kinds served, `patch` the patch formats,
`managedfields` server-side apply's field ownership, `protobuf` the request bodies kubectl's
generators send, and `tls` a self-signed serving certificate.
"""
