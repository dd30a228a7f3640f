"""The offline half: raw events -> Spark feature jobs -> Redis (or `livefeat load`).

`python -m service.pipeline --help`; docs/pipeline.md.
"""
