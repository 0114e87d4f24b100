"""crid against containerd, side by side, in one run: ``make bench`` or ``python -m benchmarks``.

- ``core``: the workload registry and the handles a workload gets.
- ``workloads`` (round trips, memory, the OCI runtime alone, pods), ``image_workloads``,
  ``container_workloads``, ``exec_workloads``, ``stats_workloads``, ``node_workloads`` (110 pods):
  the workloads, made of the plain CRI calls in ``cri_calls``. To add one, write a function of
  ``(CriTarget, Params) -> list[float]`` (samples: seconds, bytes or MB/s),
  decorate it with ``@cri_workload("name", "row title", rpcs=(...))`` and it runs
  against crid and containerd, A/B; a target that answers UNIMPLEMENTED for
  one of ``rpcs``, or raises ``NotSupported``, is reported as not supported.
  A function that measures several things per call (``@cri_rows_workload``)
  returns one list per declared ``Row``, each reported as a row of its own.
- ``images``: the test images (pause, busybox, big, small files), built in
  code and pushed to a local docker-registry that both runtimes pull from.
- ``harness``: starts the registry and the daemons (each with its own CNI
  bridge network; ``host_setup``: their cgroups and subnets), runs the workloads A/B (in the
  order of ``WORKLOAD_MODULES``), stops and removes everything.
- ``containerd``: a containerd on temporary dirs; ``oci``: the runc/crun floor.
- The other floors: ``monitor_floor`` (conmon + runc), ``spec_floor`` (runc, alone and
  under conmon, on the config.json each runtime generated for its container), ``pod_network_floor``
  (a netns and its CNI plugins), ``pull_floor`` (download, decompress, hash,
  untar, store), ``grpc_floor`` (a bare grpc.aio server, its round trips timed in turns with the
  runtime's own). ``commands`` runs their commands and waits for them without polling.
- ``report``: results.json, results.md, samples.json, latency.png.
"""
