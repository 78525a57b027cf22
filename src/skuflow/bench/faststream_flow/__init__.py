"""The choreography flow with its messaging in FastStream, written as a FastStream user would: the third system
of `skuflow bench e2e --system faststream`, beside skuflow and the raw flow (`skuflow.bench.raw`).

FastStream is the optional `bench` extra (`pip install 'skuflow[bench]'`), never a runtime dependency: only this
package imports it, and only `python -m skuflow.bench.faststream_flow inventory|catalog|users` imports this
package (the bench runs it as a subprocess, one process per service, settings from the raw flow's RAW_* variables).

Only the messaging differs from the raw flow (`bus`): a `RabbitBroker` whose subscribers take a pydantic body
model and ack after the handler (`AckPolicy.REJECT_ON_ERROR`: an error rejects the message, not requeued, as the
raw flow's `message.process()`), and a publisher with `persist=True` and FastStream's publisher confirms. The
rest is the raw flow's, reused: aiohttp for HTTP, the broker started and stopped in the app's lifecycle hooks
(FastStream's way with HTTP frameworks other than FastAPI; its own `AsgiFastStream` matches fixed paths only, with
no path parameters, and FastAPI would change the HTTP side too and blur what the comparison shows), asyncpg for
the same writes, and aiosmtplib's `send` for each email. It leaves out what the raw flow leaves out (see
`skuflow.bench.raw`).

This package may import nothing of skuflow but `skuflow.bench.raw` (an import-linter contract holds it to that).
"""
