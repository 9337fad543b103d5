"""Batch transform, the pure part: job options, how input files split into chunks
of records, how a chunk's records are parsed, filtered, fed to a model and written
back, and how chunk outputs assemble into output files. No I/O beyond the byte
streams and callables handed in: the driver (``freight.agent.driver``) and the
runner (``freight.runner``) bring the storage and the model."""
