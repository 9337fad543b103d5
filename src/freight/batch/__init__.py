"""Batch jobs: a model or a pipeline over whole data sets, shaped like ``pipelines/``.

The pure core (domain layer, no I/O beyond the byte streams and callables handed
in): :mod:`~freight.batch.spec` (options, input files, a chunk's spec and
summary), :mod:`~freight.batch.split` (files cut into chunks of records),
:mod:`~freight.batch.records` and :mod:`~freight.batch.formats` (a chunk's
records parsed, run and written back), :mod:`~freight.batch.job` (the job's
document) and :mod:`~freight.batch.view` (the job as the API shows it).

Around it: :mod:`~freight.batch.service` (service layer: what the API may do with
jobs) and :mod:`~freight.batch.driver` (engine layer: run by the agent, it claims
jobs and queues their chunks). A chunk's records run on a replica of the model,
in ``freight.runner.chunks``: the runner never touches the store. Object keys are
in :mod:`freight.keys`, with every other key scheme.
"""
