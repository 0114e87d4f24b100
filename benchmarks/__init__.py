"""crid against containerd, side by side, in one run: ``make bench`` or ``python -m benchmarks``.

- ``core``: the workload registry and the handles a workload gets.
- ``workloads``: the workloads. To add one, write a function of
  ``(CriTarget, Params) -> list[float]`` (samples: seconds, bytes or MB/s),
  decorate it with ``@cri_workload("name", "row title", rpcs=(...))`` and it runs
  against crid and containerd, A/B; a target that answers UNIMPLEMENTED for
  one of ``rpcs``, or raises ``NotSupported``, is reported as not supported.
- ``harness``: starts the daemons, runs the workloads A/B, stops everything.
- ``containerd``: a containerd on temporary dirs; ``oci``: the runc/crun floor.
- ``report``: results.json, results.md, samples.json, latency.png.
"""
