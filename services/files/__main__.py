"""python -m services.files [--addr HOST:PORT] [--blob-dir DIR]"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common import logs, runtime, settings
from services.common.blobs import LocalBlobStore, blob_dir
from services.files.server import files_addr, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.files",
        description="Serve stored results and uploads at /files/{kind}/{token}/{filename}.",
    )
    parser.add_argument(
        "--addr",
        default=settings.listen_addr(files_addr()),
        help="HOST:PORT [AIPORT_LISTEN_ADDR, else AIPORT_FILES_ADDR]",
    )
    parser.add_argument(
        "--blob-dir", type=Path, default=blob_dir(), help="blob root [AIPORT_BLOB_DIR]"
    )
    args = parser.parse_args(argv)
    logs.setup("files")
    runtime.run(serve(args.addr, LocalBlobStore(args.blob_dir)))


if __name__ == "__main__":
    main()
