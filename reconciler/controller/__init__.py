"""`fleet serve`: follows the fleet repo (polling and push webhooks), decides when and what to
reconcile, and serves the HTTP API. It adds no run logic of its own: every run goes through the
engine, with the same validation gate, guards and fenced leases as a person's command."""
