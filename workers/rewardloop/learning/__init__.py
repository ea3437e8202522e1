"""The learning library: pure code, no Ray, no Redis, no gRPC (usable on its own, River/MABWiser style).

``params`` (ConfigError and the bound checks every config type uses), ``bandits`` (one algorithm one
file, registry), ``rewards`` (signals, fusion, decay, quality, the reward ledger), ``features``
(request and real-time features), ``surface`` and ``experiments`` (configs), ``evaluation`` (OPE).
"""
