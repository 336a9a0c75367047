"""The embedded offline demo world: a generated Sentinel-2 L2A-like world and its local servers.

``generate_world()`` builds (once, cached) two tiles either side of 12°E with three dates each,
Earth Search v1 style Items and a ground-truth raster; ``serve_world()`` serves them through a
real STAC API (``rustac serve``) and a Range-capable file server on 127.0.0.1.
"""

from pipeline.demo.world import DemoTile, DemoWorld, DemoWorldError, default_cache_dir, generate_world

__all__ = ["DemoTile", "DemoWorld", "DemoWorldError", "ServedWorld", "default_cache_dir", "generate_world", "serve_world"]


def __getattr__(name: str):
    # serve.py starts processes; import it only when asked for.
    if name in ("ServedWorld", "serve_world"):
        from pipeline.demo import serve

        return getattr(serve, name)
    raise AttributeError(name)
