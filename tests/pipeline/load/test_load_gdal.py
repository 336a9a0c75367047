"""load.gdal: GDAL's HTTP settings reach every read, in this process, in worker processes and inside the graph."""

from tiny_scenes import small_grid

import pipeline.load.reader
from pipeline.load import GDAL_OPTIONS, configure_gdal, item_offsets, load_block, load_composite


def test_configure_gdal_sets_the_http_settings_in_worker_processes():
    from distributed import Client, LocalCluster

    from odc.loader._rio import capture_rio_env

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0")
    with cluster, Client(cluster) as client:
        before = next(iter(client.run(capture_rio_env).values()))
        assert "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in before
        assert configure_gdal(client) == GDAL_OPTIONS
        after = next(iter(client.run(capture_rio_env).values()))
    for key, value in GDAL_OPTIONS.items():
        assert after[key] == value


def test_gdal_http_settings_travel_inside_the_graph_to_any_worker(scenes, monkeypatch):
    """Every read task carries the settings as they were when its graph was built; the worker applies them per read."""
    import cloudpickle

    marker = "landcover-test-7f3a"  # a value no global configuration could have put there
    monkeypatch.setattr(pipeline.load.reader, "GDAL_OPTIONS", {**GDAL_OPTIONS, "GDAL_HTTP_USERAGENT": marker})
    grid = small_grid(window_px=8, stride_px=8)
    offsets = item_offsets(scenes["items"])
    ds = load_composite(scenes["items"], grid, offsets=offsets)
    block = load_block(scenes["items"], grid.pixel_geobox[:16, :16], offsets=offsets)
    for graph in (ds.red.data.__dask_graph__(), block.__dask_graph__()):
        shipped = cloudpickle.dumps(dict(graph))
        assert marker.encode() in shipped
        assert b"CPL_VSIL_CURL_ALLOWED_EXTENSIONS" in shipped
