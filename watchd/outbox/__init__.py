"""Writing results into the outbox, safely and completely.

Each module has one job and is synchronous (the pipeline runs them in a worker thread):

* :mod:`~watchd.outbox.names` — names from the API made safe on Linux, SMB and Windows; numbering.
* :mod:`~watchd.outbox.srt` — SubRip captions from transcript word timings.
* :mod:`~watchd.outbox.atomic` — temp + fsync + rename (+ directory fsync); SMB rename retries.
* :mod:`~watchd.outbox.bundles` — safe extraction of NLE export zips.
* :mod:`~watchd.outbox.manifest` — ``manifest.json``: its shape, writing it last, reading it.
* :mod:`~watchd.outbox.delivery` — the outbox folder, ``FAILED.txt``, verification, and what
  becomes of the source file.
"""
