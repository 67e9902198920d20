"""The image target: the same build plan rendered into a Docker image (S2I-compatible).

- ``dockerfile.py``: pure: the build context's files, Dockerfiles, labels.
- ``engine.py``: the engine: client, base images, probes, streamed builds and their failures.
- ``context.py``: the tars handed to the engine (build contexts, sources, saved artifacts).
- ``build.py``: application and S2I builder images.
- ``s2i.py``: the S2I flow (assemble in a builder, commit), with save-artifacts.
- ``wheel.py``: warptasks itself as a wheel, for the image's own environment.
"""
