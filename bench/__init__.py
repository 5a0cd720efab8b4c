"""asv benchmarks, one module per kernel family (see asv.conf.json)."""
