"""Files service: serves stored blobs (results and uploads) behind the edge's /files/ route.

Run:  python -m services.files [--addr 127.0.0.1:9200] [--blob-dir DIR]
Env:  AIPORT_FILES_ADDR (default 127.0.0.1:9200), AIPORT_BLOB_DIR (default .aiport/blobs)
In-process: services.files.server.create_app(store)

Routes: GET|HEAD /files/{uploads|results}/{token}/{filename} (Range, ETag,
If-None-Match, Last-Modified via aiohttp's FileResponse), GET /healthz.
"""
