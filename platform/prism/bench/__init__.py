"""Benchmarks of Prism: standard workloads, measurements and their reports.

One subpackage per benchmark (:mod:`~prism.bench.engine`, :mod:`~prism.bench.serve`,
:mod:`~prism.bench.routing`, :mod:`~prism.bench.autoscale`, :mod:`~prism.bench.chaos`), over
what they share here: the prompt texts (:mod:`~prism.bench.prompts`), the machine description
(:mod:`~prism.bench.machine`), memory measurement (:mod:`~prism.bench.memory`), latency
percentiles (:mod:`~prism.bench.stats`), and table cells and JSON records
(:mod:`~prism.bench.records`).

Importing a package here loads nothing heavy; each benchmark's modules load what they use.
"""
