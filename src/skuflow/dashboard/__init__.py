"""The dashboard (issue 19): so far, its memory of recent traces (`spans`), fed in process or over OTLP/HTTP
(`app`: the receiver and the flows' timelines as JSON). The page and `skuflow serve dashboard` come next."""
