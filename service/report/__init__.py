"""`livefeat report`: feature quality and training/serving skew, as report.json and report.html.

Modules, in the order a report runs them: `options` (the flags, checked before
anything heavy is imported), `sample` (which ids, read through the
core), `offline` (Parquet files of the `livefeat load` format), `served` (the
served-feature log), `stats` and `skew` (the figures), `plots` (inline SVG),
`html` (the page), `build` (the command's glue).
"""
