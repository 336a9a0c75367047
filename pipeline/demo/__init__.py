"""The embedded offline demo world: a generated Sentinel-2 L2A-like world and its local servers.

``generate_world()`` builds (once, cached) two tiles either side of 12°E with three dates each,
Earth Search v1 style Items and a ground-truth raster; ``serve_world()`` serves them through a
real STAC API (``rustac serve``) and a Range-capable file server on 127.0.0.1.
``generate_world(layout=(3, 2))`` lays out more tiles across 12°E. ``catalogue.synthetic_catalogue()``
makes metadata-only Items on the real MGRS tiling of a country, ``serve_items()`` serves them.
"""

from pipeline.demo.world import DemoTile, DemoWorld, DemoWorldError, default_cache_dir, generate_world, parse_layout

__all__ = [
    "DemoTile", "DemoWorld", "DemoWorldError", "ServedWorld", "default_cache_dir", "generate_world", "parse_layout",
    "serve_items", "serve_world",
]


def __getattr__(name: str):
    # serve.py starts processes; import it only when asked for.
    if name in ("ServedWorld", "serve_items", "serve_world"):
        from pipeline.demo import serve

        return getattr(serve, name)
    raise AttributeError(name)
