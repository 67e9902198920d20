"""The image target: the same build plan rendered into a Docker image (S2I-compatible).

- ``dockerfile.py``: pure: the build context's files, Dockerfiles, labels.
- ``engine.py``: builds and runs through the Docker SDK.
- ``wheel.py``: warptasks itself as a wheel, for the image's own environment.
"""
