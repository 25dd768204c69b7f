"""``dstfuse-batch``: fuse whole datasets on Ray (``pip install "dstfuse-stream[ray]"``).

* :mod:`~dstfuse_stream.batch.plan`: inputs -> sequences -> work items and their output paths;
* :mod:`~dstfuse_stream.batch.job`: one work item through :func:`dstfuse_stream.stream` into
  temporary outputs, renamed when complete;
* :mod:`~dstfuse_stream.batch.ray_runner`: Ray actors that each hold one Fuser, and the driver loop;
* :mod:`~dstfuse_stream.batch.cli`: the command, skipping of finished outputs, the dataset summary.

Importing this package imports neither torch nor Ray.
"""
