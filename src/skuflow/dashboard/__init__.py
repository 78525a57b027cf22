"""The dashboard (issue 19): so far, its memory of recent traces (`spans`), from which flows' timelines are drawn."""
