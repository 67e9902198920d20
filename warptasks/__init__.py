"""warptasks: detect, build and start Python web apps the same way everywhere.

Import the task collection into your own ``tasks.py``::

    from invoke import Collection
    import warptasks

    ns = Collection(warptasks.ns)   # warp.build, warp.start, warp.plan, ...
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # the collection imports invoke; keep `import warptasks` light
    if name == "ns":
        from .tasks import ns

        return ns
    raise AttributeError(name)
