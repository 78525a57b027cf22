"""The users service (CONTRACT section 3): accounts, clients and the tokens every other service trusts.

The pure rules, one concept a module and no I/O: `scopes`, `tokens` (opaque, and why), `oauth` (the token
request and its errors), `rate_limits` (the sliding windows) and `emails` (the address rule, when an email is
due, its outcomes and backoff). `db` holds the tables, `accounts` the operations on them, `api` the HTTP
endpoints and `service` the wiring (`build_app`).
"""
