"""The Tollgate gateway: an OpenAI-compatible reverse proxy in front of the serving slots.

    python -m gateway --config gateway.yaml [--host H] [--port P] [--admin-port A] [--workers N]

Rooms: config.py (the config file), routing.py (state, sticky arms), shared.py (state shared by the
worker processes), http.py (server side), upstream.py (keep-alive upstream pool), proxy.py (one
request's flow), safety.py (redaction, guardrails), reqlog.py (Parquet spool -> S3), metrics.py
(prometheus, multiprocess), server.py (supervisor, workers, admin API), client.py (AdminClient).
"""
