"""The S3 weights pipeline: publish a version (weights, then its manifest), stage it onto a volume.

    manifest.py   MANIFEST.json: what a version is made of
    s3.py         the S3 adapter: client, model URLs, what S3 errors mean
    publish.py    python -m evals.publish
    stage.py      python -m evals.stage: the staging protocol
    transfer.py   the threaded ranged-GET / splice transfer engine
    fs.py         file-system primitives: atomic swaps, writeback, hashing, the version lock
    retention.py  --keep: evicting old versions, never one in use
    config.py     staging's knobs and the names it leaves on the volume
"""
