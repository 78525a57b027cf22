"""The users service (CONTRACT section 3): accounts, clients and the tokens every other service trusts.

`domain` holds the pure rules (scopes, tokens, the token request, the rate-limit window), `db` the tables,
`accounts` the operations on them, `api` the HTTP endpoints and `service` the wiring (`build_app`).
"""
