"""Batch jobs: a model or a pipeline over whole data sets, shaped like ``pipelines/``.

The pure core (domain layer, no I/O beyond the byte streams and callables handed
in): :mod:`~freight.batch.spec` (options, input files, a chunk's spec and
summary), :mod:`~freight.batch.split` (files cut into chunks of records),
:mod:`~freight.batch.records` and :mod:`~freight.batch.formats` (a chunk's
records parsed, run and written back), :mod:`~freight.batch.job` (the job's
document) and :mod:`~freight.batch.view` (the job as the API shows it).

Around it: :mod:`~freight.batch.service` (service layer: what the API may do with
jobs) and the driver (engine layer, run by the agent): :mod:`~freight.batch.driver`
claims jobs and runs them file by file, :mod:`~freight.batch.files` runs one
file's chunks and writes its output, :mod:`~freight.batch.pipeline_chunks` runs a
pipeline target's chunks. A model's chunk runs on a replica of the model, in
``freight.runner.chunks``: the runner never touches the store. Object keys are in
:mod:`freight.keys`, with every other key scheme.
"""
