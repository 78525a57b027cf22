"""`skuflow bench stock`: `POST /v1/stock` alone, one SKU per report, at a number of reports in flight, against
skuflow's inventory and, in the same run, the raw building blocks' inventory (`skuflow.bench.raw`).

Each run starts what it loads afresh in processes of its own (`targets`): `skuflow serve inventory` (with
`--workers N`) beside `skuflow serve users` for the warehouse's token, each on a scratch stack of `bench e2e`
(a scratch vhost and database); or, embedded, `skuflow up`; or the raw inventory, on a scratch stack too. The load
comes from other processes (`client`, as many as `clients`), each an aiohttp client keeping its share of the
reports in flight, so that the generator is not what limits the rate; `load` starts them, gives the window's
start after a warm-up, and adds up their tallies with the CPU each process used in the window. Runs take turns
(skuflow, raw, skuflow, raw, ...: `turns`); the report gives each system's medians and skuflow / raw per pair
(`figures`; `rendering` shows them).

This package's own module imports nothing: a generator process (`python -m skuflow.bench.stock.client`) loads what
it needs alone.
"""
