"""``dsqltrace report``: latency figures from stored spans, invocation records and client timings.

- :mod:`.runs`: reads a run folder (``spans.jsonl``, ``invocations.jsonl``, ``client.jsonl``);
- :mod:`.figures`: the figures (per span name, cold versus warm, late and lost spans, the seed);
- :mod:`.charts`: the pictures (cold-start waterfall, latency over time, histograms);
- :mod:`.render`: the terminal table, ``report.json`` and the self-contained ``report.html``.
"""
